"""The LoCoMo loader: on the shipped sample always, on the real development set when present."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from langchain_ragtune.errors import DatasetError, InvalidInputError
from langchain_ragtune.datasets import locomo
from langchain_ragtune.datasets.locomo import (
    LOCOMO_PATH_ENV,
    canonical_dia_id,
    find_locomo_path,
    load_locomo,
    load_sample,
    parse_locomo,
    parse_session_datetime,
    select_conversations,
)
from langchain_ragtune.eval.locomo import to_turns


def _real_file() -> Path | None:
    """The development set where the package finds it ($RAGTUNE_LOCOMO_PATH, else ../shared)."""
    try:
        return find_locomo_path()
    except (DatasetError, InvalidInputError):
        return None


REAL_FILE = _real_file()
needs_locomo = pytest.mark.skipif(
    REAL_FILE is None,
    reason=f"LoCoMo development set not found (see ../shared/data/locomo/README.md, or set "
           f"{LOCOMO_PATH_ENV}); the shipped sample is tested instead",
)


def _minimal(**conv_extra):
    conv = {"speaker_a": "Ann", "speaker_b": "Bob",
            "session_1_date_time": "9:05 pm on 2 January, 2024",
            "session_1": [{"speaker": "Ann", "dia_id": "D1:1", "text": "Hello"},
                          {"speaker": "Bob", "dia_id": "D1:2", "text": "",
                           "blip_caption": "a cat"}]}
    conv.update(conv_extra)
    return [{"sample_id": "c1", "conversation": conv,
             "qa": [{"question": "Q?", "answer": 2022, "evidence": ["D1:1; D1:2"], "category": 2},
                    {"question": "Adv?", "adversarial_answer": "x", "evidence": [], "category": 5}],
             "observation": {"must": "not be read"}}]


@pytest.mark.parametrize("text, expected", [
    ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)),
    ("12:09 am on 13 September, 2023", datetime(2023, 9, 13, 0, 9, tzinfo=timezone.utc)),
    ("12:30 pm on 1 Jan, 2024", datetime(2024, 1, 1, 12, 30, tzinfo=timezone.utc)),
    ("9:05 AM on 2 January 2024", datetime(2024, 1, 2, 9, 5, tzinfo=timezone.utc)),
])
def test_parse_session_datetime(text, expected):
    assert parse_session_datetime(text) == expected


@pytest.mark.parametrize("bad", ["yesterday", "25:00 pm on 8 May, 2023", "1:56 pm on 31 June, 2023",
                                 "1:56 pm on 8 Maytember, 2023", None])
def test_parse_session_datetime_rejects(bad):
    with pytest.raises(InvalidInputError, match="1:56 pm on 8 May, 2023|not a real date"):
        parse_session_datetime(bad)


def test_canonical_dia_id_repairs_known_typos():
    assert canonical_dia_id("D:11:26") == "D11:26"
    assert canonical_dia_id("D30:05") == "D30:5"
    assert canonical_dia_id(" D1:3 ") == "D1:3"
    assert canonical_dia_id("D") == "D"  # unrepairable: kept, matches no turn


def test_parse_minimal_structure():
    conv = parse_locomo(_minimal())[0]
    assert (conv.sample_id, conv.speaker_a, conv.speaker_b) == ("c1", "Ann", "Bob")
    turns = list(conv.turns())
    assert [t.dia_id for t in turns] == ["D1:1", "D1:2"]
    start = datetime(2024, 1, 2, 21, 5, tzinfo=timezone.utc)
    assert conv.sessions[0].date_time == start
    assert [t.occurred_at for t in turns] == [start, start + timedelta(seconds=1)]
    # An image-only turn is remembered through its caption.
    assert turns[1].memory_text() == "[shares a photo: a cat]"
    q, adv = conv.qa
    assert q.answer == "2022" and q.evidence == ["D1:1", "D1:2"] and q.category == 2
    assert adv.answer == "" and adv.adversarial_answer == "x" and adv.category == 5
    assert conv.question_id(adv) == "c1#1"


def test_sessions_without_turns_are_skipped():
    conv = parse_locomo(_minimal(session_2_date_time="1:00 pm on 3 January, 2024", session_2=[]))[0]
    assert [s.index for s in conv.sessions] == [1]


@pytest.mark.parametrize("data, where", [
    ([], "non-empty"),
    ({"nope": 1}, "conversation"),
    ([{"sample_id": "x", "conversation": {"speaker_a": "A"}}], "speaker_b"),
    ([{"sample_id": "x", "conversation": {"speaker_a": "A", "speaker_b": "B",
                                          "session_1": [{"speaker": "A", "text": "t"}]}}],
     "session_1_date_time"),
    ([{"sample_id": "x", "conversation": {"speaker_a": "A", "speaker_b": "B",
                                          "session_1_date_time": "soon",
                                          "session_1": [{"speaker": "A", "text": "t"}]}}],
     "LoCoMo's format"),
    ([{"sample_id": "x", "conversation": {"speaker_a": "A", "speaker_b": "B"}}], "no session"),
])
def test_parse_rejects_malformed(data, where):
    with pytest.raises(DatasetError, match=where):
        parse_locomo(data)


def test_parse_rejects_duplicate_ids():
    with pytest.raises(DatasetError, match="duplicate sample_id"):
        parse_locomo(_minimal() + _minimal())


def test_missing_explicit_file_says_where(tmp_path):
    with pytest.raises(InvalidInputError, match="snap-research/LoCoMo"):
        load_locomo(tmp_path / "absent.json")


def test_missing_env_file_says_unset(tmp_path, monkeypatch):
    monkeypatch.setenv(LOCOMO_PATH_ENV, str(tmp_path / "absent.json"))
    with pytest.raises(InvalidInputError, match=r"RAGTUNE_LOCOMO_PATH.*unset"):
        find_locomo_path()


def test_missing_default_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv(LOCOMO_PATH_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(locomo, "_REPO_ROOT", tmp_path)
    with pytest.raises(DatasetError, match=r"shared/data/locomo/locomo10\.json"):
        find_locomo_path()


def test_default_is_found_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv(LOCOMO_PATH_ENV, raising=False)
    target = tmp_path / "shared" / "data" / "locomo" / "locomo10.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(_minimal()))
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    monkeypatch.setattr(locomo, "_REPO_ROOT", tmp_path / "elsewhere")
    assert [c.sample_id for c in load_locomo()] == ["c1"]


def test_env_variable_is_used(tmp_path, monkeypatch):
    f = tmp_path / "mine.json"
    f.write_text(json.dumps(_minimal()))
    monkeypatch.setenv(LOCOMO_PATH_ENV, str(f))
    assert find_locomo_path() == f


@pytest.mark.parametrize("content", ["{not json", "\xff\xfe garbage", "[1, 2]"])
def test_corrupt_file_is_a_dataset_error(tmp_path, content):
    f = tmp_path / "bad.json"
    f.write_bytes(content.encode("latin-1"))
    with pytest.raises(DatasetError, match="bad.json"):
        load_locomo(f)


def test_shipped_sample():
    convs = load_sample()
    assert len(convs) == 1
    conv = convs[0]
    assert (conv.speaker_a, conv.speaker_b) == ("Priya", "Tomas")
    assert len(conv.sessions) == 4 and conv.n_turns == 60
    dates = [s.date_time for s in conv.sessions]
    assert dates == sorted(dates)
    categories = {q.category for q in conv.qa}
    assert {1, 2, 4, 5} <= categories and len(conv.qa) >= 20
    ids = conv.dia_ids
    for q in conv.qa:  # every evidence id of the sample points at a real turn
        assert q.evidence and set(q.evidence) <= ids, q
    assert any(t.blip_caption for t in conv.turns())
    assert any(q.answer == "2023" for q in conv.qa)  # stored as an int in the file


def test_to_turns_on_sample():
    conv = load_sample()[0]
    turns = to_turns(conv)
    assert len(turns) == conv.n_turns
    assert [t.message_id for t in turns] == [t.dia_id for t in conv.turns()]
    times = [t.occurred_at for t in turns]
    assert times == sorted(times) and len(set(times)) == len(times)
    first = turns[0]
    assert first.thread_id == "sample-1/session_1" and first.speaker == "Priya"
    assert first.metadata == {"dia_id": "D1:1", "session": 1}
    assert first.occurred_at == datetime(2024, 3, 3, 10, 15, tzinfo=timezone.utc)
    captioned = next(t for t in turns if "[shares a photo:" in t.text)
    assert captioned.text.endswith("]")


def test_select_conversations():
    convs = load_sample()
    assert select_conversations(convs, None) == convs
    assert select_conversations(convs, ["sample-1", "sample-1"]) == convs
    with pytest.raises(InvalidInputError, match="sample-1"):
        select_conversations(convs, ["conv-99"])


@needs_locomo
def test_real_locomo_file():
    convs = load_locomo(REAL_FILE)
    assert len(convs) == 10
    assert sum(c.n_turns for c in convs) == 5882
    assert sum(len(c.sessions) for c in convs) == 272
    counts = {k: 0 for k in range(1, 6)}
    for c in convs:
        for q in c.qa:
            counts[q.category] += 1
    assert counts == {1: 282, 2: 321, 3: 96, 4: 841, 5: 446}
    no_evidence = sum(1 for c in convs for q in c.qa if not q.evidence)
    assert no_evidence == 4
    # After repairing "D8:6; D9:17"-style packing and "D:11:26"/"D30:05" typos, only a few
    # evidence ids still match no turn.
    unmatched = [(c.sample_id, e) for c in convs for q in c.qa for e in q.evidence
                 if e not in c.dia_ids]
    assert 0 < len(unmatched) <= 5, unmatched
    first = convs[0]
    assert first.sample_id == "conv-26" and first.speaker_a == "Caroline"
    assert first.sessions[0].date_time == datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)
    turns = [t for c in convs for t in to_turns(c)]
    assert len({(t.thread_id, t.message_id) for t in turns}) == 5882
