"""Reports: Markdown tables and PNG plots from results JSON."""

from __future__ import annotations

import json

import pytest

from langchain_ragtune.cli import main
from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.eval.harness import ModeAnswer, run_modes, summarize
from langchain_ragtune.eval.locomo import load_sample
from langchain_ragtune.eval.report import load_results, render_markdown, series_of, write_report


class _Mode:
    def __init__(self, name, *, right=True, route=None, retrieve=False):
        self.name, self.right, self.route, self.retrieve = name, right, route, retrieve

    def describe(self):
        return {}

    def prepare(self, conversation):
        return {"turns": conversation.n_turns}

    def answer(self, conversation, question):
        pred = ("Not mentioned" if question.category == 5 else question.answer) \
            if self.right else "zebra"
        return ModeAnswer(prediction=pred, latency_ms=5.0, memory_tokens=42, route=self.route,
                          retrieved=[[e] for e in question.evidence] if self.retrieve else [])


@pytest.fixture(scope="module")
def results():
    rows = run_modes(load_sample(), [
        _Mode("none", right=False),
        _Mode("retrieval", retrieve=True),
        _Mode("routed", route="retrieval"),
    ], progress=False)
    return summarize(rows, metadata={"k": 10, "window": 1, "date": "2026-01-01T00:00:00+00:00",
                                     "n_questions": 69, "conversations": ["sample-1"]})


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_write_report_all_plots(results, tmp_path):
    path = write_report([results], tmp_path)
    text = path.read_text()
    for name in ("f1_by_category.png", "recall_by_category.png", "quality_vs_latency.png",
                 "route_mix.png"):
        assert _is_png(tmp_path / name), name
        assert f"({name})" in text
    assert "| retrieval | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |" in text
    assert "| none | 0.000 |" in text
    assert "routed: mix retrieval 100%; accuracy vs oracle 1.000" in text


def test_router_summary_belongs_to_the_routed_mode(results):
    assert results["router"]["mode"] == "routed"
    assert results["router"]["mix"] == {"retrieval": 1.0}
    assert [s.label for s in series_of([results]) if s.router] == ["routed"]


def test_retrieval_only_report_has_no_f1_plot(tmp_path):
    rows = run_modes(load_sample(), [_Mode("x", retrieve=True)], progress=False)
    res = summarize(rows, metadata={"k": 5})
    res["modes"]["x"].pop("f1")
    write_report([res], tmp_path)
    assert not (tmp_path / "f1_by_category.png").exists()
    assert _is_png(tmp_path / "recall_by_category.png")
    assert "Answer F1" not in (tmp_path / "report.md").read_text()


def test_runs_are_labelled_by_what_differs(results):
    a = json.loads(json.dumps(results))
    b = json.loads(json.dumps(results))
    b["metadata"]["window"] = 2
    labels = [s.label for s in series_of([a, b])]
    assert "retrieval (window=1)" in labels and "retrieval (window=2)" in labels
    assert "Runs compared:" in render_markdown([a, b])


def test_runs_differing_only_in_store_settings_are_told_apart(results):
    a = json.loads(json.dumps(results))
    b = json.loads(json.dumps(results))
    a["metadata"]["store"] = {"schema": "s1", "keyword_scoring": "bm25", "rrf_k": 60}
    b["metadata"]["store"] = {"schema": "s2", "keyword_scoring": "ts_rank_cd", "rrf_k": 60}
    labels = [s.label for s in series_of([a, b]) if s.mode == "retrieval"]
    # the schema differs too, but says nothing about the search: it stays out of the label
    assert labels == ["retrieval (keyword_scoring=bm25)", "retrieval (keyword_scoring=ts_rank_cd)"]


def test_load_results_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_results(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(InvalidInputError, match="not JSON"):
        load_results(bad)
    bad.write_text("[]")
    with pytest.raises(InvalidInputError, match="modes"):
        load_results(bad)
    with pytest.raises(InvalidInputError):
        write_report([], tmp_path)


def test_cli_eval_report(results, tmp_path, capsys):
    src = tmp_path / "r.json"
    src.write_text(json.dumps(results))
    assert main(["eval", "report", str(src), "--report", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.md").exists()
    assert main(["eval", "report", str(tmp_path / "missing.json"), "--report",
                 str(tmp_path / "o2")]) == 1
    assert "does not exist" in capsys.readouterr().err
