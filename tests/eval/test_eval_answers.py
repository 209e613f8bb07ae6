"""The answering modes of ``ragtune eval locomo``: logic on a real PostgreSQL.

The reader is an echo model (it repeats its prompt, tagged with the model it stands for) and
training is the fast stand-in of tests/tuning_fakes.py, so these tests check what each mode
puts in front of the reader, the scoring, seeds, resuming and the judge wiring. The same
modes run for real (vLLM, a real LoRA training run, the served judge) in
test_eval_answers_vllm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from tuning_fakes import FakeEvaluator, FakeTrainer

from langchain_ragtune.config import ModelConfig
from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.eval.answer_eval import run_answer_eval, run_memory
from langchain_ragtune.eval.locomo import load_sample
from langchain_ragtune.eval.modes import Reader, TuneSettings
from langchain_ragtune.testing import EchoChatModel

MODES = ["none", "full-context", "retrieval", "parametric", "hybrid", "routed"]


class _Reader(BaseChatModel):
    """Answers ``<model> || <the user turn>``: which model answered and what it was shown."""

    tag: str = "base"

    @property
    def _llm_type(self) -> str:
        return "tagged-echo"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        human = [m for m in messages if m.type == "human"][-1]
        text = f"{self.tag} || {human.content}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def _reader(context_tokens: int = 100_000) -> Reader:
    return Reader(name="tagged-echo", factory=lambda adapter: _Reader(tag=adapter or "base"),
                  context_tokens=context_tokens)


@pytest.fixture(scope="module")
def base_model() -> Path:
    pytest.importorskip("transformers", reason="install the [train] extra")
    from langchain_ragtune.models import prepare_base_model

    return prepare_base_model(quiet=True)


@pytest.fixture
def options(base_model, tmp_path):
    trainer = FakeTrainer()
    return trainer, {"model_config": ModelConfig(base_model=str(base_model),
                                                 home=tmp_path / "home"),
                     "trainer": trainer, "evaluator": FakeEvaluator()}


def _run(store, tmp_path, options, modes=MODES, **kw):
    args = dict(k=4, window=1, max_questions=3, progress=False,
                tune=TuneSettings(distill={"teacher": None, "canaries": 2}),
                namespace_prefix=("eval-test", tmp_path.name),
                records_path=tmp_path / "run.questions.jsonl", refresh_options=options[1])
    args.update(kw)
    return run_answer_eval(store, load_sample(), modes, _reader(), **args)


def test_every_mode_answers_with_its_own_memory(store, tmp_path, options):
    result = _run(store, tmp_path, options)
    modes = result["modes"]
    assert list(modes) == MODES
    for name in MODES:
        assert modes[name]["n_questions"] == 3
        assert modes[name]["f1"]["all"] is not None
    assert result["metadata"]["n_questions"] == 3  # questions, not answers in every mode
    qs = {(q["mode"], q["index"]): q for q in result["questions"]}
    adapter = modes["parametric"]["prepare"]["adapters"][0]["adapter"]
    assert adapter and modes["parametric"]["prepare"]["adapters"][0]["status"] == "published"
    for i in range(3):
        question = qs[("none", i)]["question"]
        # none: the base model, the bare question
        assert qs[("none", i)]["prediction"] == f"base || {question}"
        # retrieval: the base model with memories in the user turn, recall scored
        assert qs[("retrieval", i)]["prediction"].startswith("base || Memories from past")
        assert qs[("retrieval", i)]["recall"] is not None
        # parametric: the conversation's adapter, no context
        assert qs[("parametric", i)]["prediction"] == f"{adapter} || {question}"
        assert qs[("parametric", i)]["memory_tokens"] == 0
        # hybrid: the adapter with the context
        assert qs[("hybrid", i)]["prediction"].startswith(f"{adapter} || Memories from past")
        # full-context: the whole conversation, oldest turn first
        first_turn = next(load_sample()[0].turns()).memory_text()
        assert first_turn in qs[("full-context", i)]["prediction"]
        assert qs[("full-context", i)]["extra"]["fits"] is True
        # routed: whatever the router chose, recorded with its reasons
        routed = qs[("routed", i)]
        assert routed["route"] in ("none", "retrieval", "parametric", "hybrid")
        assert routed["extra"]["reasons"]
        if routed["route"] in ("parametric", "hybrid"):
            assert routed["prediction"].startswith(adapter)
    assert len(options[0].calls) == 1  # one adapter, shared by parametric, hybrid and routed
    router = result["router"]
    assert router["mode"] == "routed" and abs(sum(router["mix"].values()) - 1) < 1e-9
    assert router["accuracy_vs_oracle"] is not None
    assert result["metadata"]["reader"] == "tagged-echo"
    assert result["metadata"]["tune"]["gate"] == {"gate": False}


def test_full_context_counts_what_does_not_fit(store, tmp_path, options):
    conv = load_sample()[0]
    result = run_answer_eval(store, [conv], ["full-context"], _reader(context_tokens=400),
                             k=4, max_questions=2, progress=False,
                             namespace_prefix=("eval-fit", tmp_path.name))
    entry = result["modes"]["full-context"]
    assert entry["prepare"]["not_fitting"] == 1
    q = result["questions"][0]
    assert q["extra"]["fits"] is False and 0 < q["extra"]["context_turns"] < q["extra"]["turns"]
    # the most recent turns are the ones kept
    last_turn = list(conv.turns())[-1].memory_text()
    assert last_turn in q["prediction"]


def test_seeds_train_again_and_report_the_spread(store, tmp_path, options):
    result = _run(store, tmp_path, options, modes=["retrieval", "parametric"], seeds=[0, 1])
    assert len(options[0].calls) == 2
    spread = result["seeds"]
    assert spread["values"] == [0, 1]
    assert len(spread["modes"]["parametric"]["f1_overall"]["per_seed"]) == 2
    assert "retrieval" not in spread["modes"]  # greedy answers do not change with the seed
    seeds = {q["seed"] for q in result["questions"] if q["mode"] == "parametric"}
    assert seeds == {0, 1}
    assert {q["seed"] for q in result["questions"] if q["mode"] == "retrieval"} == {0}
    assert (tmp_path / "run.questions.seed1.jsonl").exists()


def test_resume_answers_nothing_twice(store, tmp_path, options):
    first = _run(store, tmp_path, options, modes=["none", "parametric"])
    again = _run(store, tmp_path, options, modes=["none", "parametric"], resume=True)
    assert len(options[0].calls) == 1  # every question was done: no preparation either
    assert again["modes"]["none"]["f1"] == first["modes"]["none"]["f1"]
    lines = (tmp_path / "run.questions.jsonl").read_text().splitlines()
    assert sum(json.loads(x).get("kind") == "question" for x in lines) == 6


class _Judge(BaseChatModel):
    """CORRECT when the generated answer contains the gold answer."""

    @property
    def _llm_type(self) -> str:
        return "contains-judge"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        prompt = messages[-1].content
        gold = prompt.split("Gold answer:")[1].split("\n")[0].strip()
        generated = prompt.split("Generated answer:")[1]
        label = "CORRECT" if gold.lower() in generated.lower() else "WRONG"
        out = json.dumps({"label": label})
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=out))])


def test_judge_grades_every_answer_of_categories_1_to_4(store, tmp_path, options):
    result = _run(store, tmp_path, options, modes=["none", "retrieval"], judge=_Judge(),
                  max_questions=None, categories=[1, 2, 4, 5])
    for mode in ("none", "retrieval"):
        rows = [q for q in result["questions"] if q["mode"] == mode]
        assert all(q["judge"] in (0.0, 1.0) for q in rows if q["category"] != 5)
        assert all(q.get("judge") is None for q in rows if q["category"] == 5)
        assert result["modes"][mode]["judge"]["all"] is not None
    # the echo never contains the gold answer without memory; with memory it sometimes does
    assert result["modes"]["none"]["judge"]["all"] <= result["modes"]["retrieval"]["judge"]["all"]
    meta = result["metadata"]["judge"]
    assert meta["model"] and "CORRECT" in meta["prompt"] and meta["counts"]["judged"] > 0


def test_holistic_questions_are_compared_pairwise(store, tmp_path, options):
    class AlwaysA(EchoChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            msg = AIMessage(content='{"winner": "A"}')
            return ChatResult(generations=[ChatGeneration(message=msg)])

    result = _run(store, tmp_path, options, modes=["none", "retrieval", "parametric"],
                  judge=AlwaysA(), holistic=2, holistic_modes=["parametric", "retrieval"])
    hol = result["holistic"]
    assert list(hol["pairs"]) == ["retrieval vs parametric"]  # only the modes asked for
    pair = hol["pairs"]["retrieval vs parametric"]
    assert pair["n"] == 2 and pair["wins_a"] + pair["wins_b"] == 2  # a judge always saying "A"
    assert {a["mode"] for a in hol["answers"]} == {"retrieval", "parametric"}
    with pytest.raises(InvalidInputError, match="holistic-modes"):
        _run(store, tmp_path, options, modes=["none"], judge=AlwaysA(), holistic=1,
             holistic_modes=["none", "parametric"])


def test_adapter_modes_need_a_reader_that_serves_adapters(store, tmp_path):
    reader = Reader(name="api", factory=lambda adapter: _Reader(), adapters=False)
    with pytest.raises(InvalidInputError, match="serves LoRA adapters"):
        run_answer_eval(store, load_sample(), ["parametric"], reader, progress=False)
    with pytest.raises(InvalidInputError, match="unknown mode"):
        run_answer_eval(store, load_sample(), ["telepathy"], reader, progress=False)


def test_pretrained_adapters_are_published_at_first_use(store, tmp_path, options):
    from langchain_ragtune.tuning.registry import AdapterRegistry

    prefix = ("eval-pre", tmp_path.name)
    memory = run_memory(store, 0, tune=TuneSettings(distill={"teacher": None, "canaries": 2}),
                        namespace_prefix=prefix, progress=False, refresh_options=options[1])
    memory.pretrain(load_sample())
    ns = (*prefix, load_sample()[0].sample_id)
    registry = AdapterRegistry(store)
    assert len(options[0].calls) == 1 and registry.current(ns) is None  # trained, not served
    assert registry.list(ns)[0].status == "ready"
    published = []

    def publish(rec):  # what the Publisher does, minus vLLM: switch the pointer
        published.append(rec)
        registry.switch_current(rec.namespace, rec.id)

    result = run_answer_eval(store, load_sample(), ["parametric"], _reader(), k=4,
                             max_questions=2, progress=False, namespace_prefix=prefix,
                             memories={0: memory}, publish=publish)
    assert len(options[0].calls) == 1  # no second training
    assert [r.name for r in published] == [registry.list(ns)[0].name]
    assert result["modes"]["parametric"]["prepare"]["adapters"][0]["status"] == "published"
