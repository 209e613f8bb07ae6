"""The evaluation gate and canary helpers (pure)."""

from __future__ import annotations

import pytest

from langchain_ragtune.errors import ConfigError
from langchain_ragtune.tuning.evaluate import accuracy, canary_span, check_canary, gate
from langchain_ragtune.tuning.canaries import published_canaries
from langchain_ragtune.tuning.gate import GateConfig


def test_gate_allows_equal_or_better_and_tolerance():
    same = {"closed_book": 0.5, "canary": 1.0}
    assert gate(same, dict(same)) == (True, [])
    assert gate({"closed_book": 0.5}, {"closed_book": 0.46}, tolerance=0.05)[0]
    ok, reasons = gate({"closed_book": 0.5, "canary": 1.0}, {"closed_book": 0.3, "canary": 0.5},
                       tolerance=0.05)
    assert not ok and len(reasons) == 2 and "0.500 to 0.300" in reasons[1]


def test_gate_skips_missing_scores():
    assert gate({"closed_book": None, "canary": 0.0}, {"closed_book": 0.2, "canary": 0.0})[0]
    assert gate({"closed_book": 0.9}, {"closed_book": None})[0]


def test_accuracy_counts_facts_beyond_the_question():
    qa = [("Where did Ann move?", "Ann moved to Lisbon."), ("What is Bo's dog called?", "Biscuit")]
    assert accuracy(["She moved to Lisbon.", "Bo has a dog."], qa) == 0.5
    assert accuracy([], []) is None


def test_canary_span_is_verbatim_in_answer_and_source():
    answer = 'On 3 March 2024, Tomas said: "I finished a walnut dining table for a client."'
    ref = "Hey Priya! I finished a walnut dining table for a client last week."
    span = canary_span(answer, ref)
    assert span and span.casefold() in answer.casefold() and span.casefold() in ref.casefold()
    assert "walnut dining table" in span
    assert canary_span("Nothing in common here", ref) is None


def test_published_canaries_keep_only_answered_ones():
    canaries = [("What did Tomas say about walnut table?", "I finished a walnut dining table."),
                ("What did Priya say about octopus?", "One octopus learned to open a jar.")]
    answers = ['Tomas said: "I finished a walnut dining table."', "I do not know."]
    out = published_canaries(canaries, answers)
    assert len(out) == 1 and out[0]["question"] == canaries[0][0]
    assert check_canary(answers[0], {"question": canaries[0][0], "expected": canaries[0][1]})
    assert out[0]["expected"].casefold() in answers[0].casefold()


def test_canary_min_margin_is_checked_and_read_from_the_environment(monkeypatch):
    assert GateConfig().canary_min_margin == 1.0
    with pytest.raises(ConfigError, match=r"canary_min_margin=-0\.5 .*RAGTUNE_CANARY_MIN_MARGIN"):
        GateConfig(canary_min_margin=-0.5)
    monkeypatch.setenv("RAGTUNE_CANARY_MIN_MARGIN", "2.5")
    assert GateConfig.from_env().canary_min_margin == 2.5


def test_floors_refuse_an_adapter_that_learned_too_little_or_forgot():
    after = {"closed_book": 0.8, "trained_fact_recall": 0.4, "general_kept": 0.95}
    floors = {"trained_fact_recall": 0.5, "general_kept": 0.9}
    ok, reasons = gate({"closed_book": 0.1}, after, floors=floors)
    assert not ok and reasons == ["trained_fact_recall is 0.400, below the floor 0.5"]
    ok, reasons = gate({}, {**after, "trained_fact_recall": 0.9, "general_kept": 0.5},
                       floors=floors)
    assert not ok and "general_kept is 0.500" in reasons[0]
    assert gate({}, {"trained_fact_recall": None}, floors=floors) == (True, [])
    with pytest.raises(ConfigError, match="general_min_kept"):
        GateConfig(general_min_kept=1.5)


def test_evaluation_sizes_are_checked_and_named():
    assert GateConfig().eval_max_facts >= 200  # every fact of a ~400-turn history
    with pytest.raises(ConfigError, match=r"eval_max_facts=-1 .*RAGTUNE_EVAL_MAX_FACTS"):
        GateConfig(eval_max_facts=-1)
