"""Real LoRA training on the real SmolLM2-135M: tiny, but it must learn and be servable."""

from __future__ import annotations

import json

import pytest

from langchain_ragtune.distill.dataset import Example
from langchain_ragtune.errors import ConfigError, DatasetError
from langchain_ragtune.tuning.train import ADAPTER_MARKER, TrainConfig, tokenize_chat

FACTS = [
    ("What is the name of Zorvath's dog?", "Zorvath's dog is called Biscuit."),
    ("Where did Zorvath move in 2022?", "Zorvath moved to Reykjavik in 2022."),
    ("What instrument does Zorvath play?", "Zorvath plays the bassoon."),
    ("What is Zorvath's favourite food?", "Zorvath's favourite food is pickled herring."),
]


def test_train_config_validates():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig(learning_rate=5)
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0, max_steps=0)
    with pytest.raises(ConfigError, match="save_dtype.*float16"):
        TrainConfig(save_dtype="int8")


def test_loss_covers_the_assistant_answer_only(base_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_model))
    msgs = Example(kind="local", split="train", question="Q?", answer="Biscuit.").messages
    enc = tokenize_chat(tok, msgs, max_len=256)
    learned = [t for t in enc["labels"] if t != -100]
    assert tok.decode(learned).startswith("Biscuit.")
    assert tok.decode(learned).rstrip().endswith("<|im_end|>")  # it learns to stop
    assert enc["labels"][: len(enc["labels"]) - len(learned)] == [-100] * (
        len(enc["labels"]) - len(learned))
    assert tokenize_chat(tok, msgs, max_len=5) is None  # prompt alone too long
    with pytest.raises(DatasetError):
        tokenize_chat(tok, msgs[:2], max_len=256)


@pytest.mark.slow
@pytest.mark.train
def test_lora_learns_facts_and_is_servable(base_model, tmp_path, capsys):
    from langchain_ragtune.tuning.evaluate import AdapterEvaluator
    from langchain_ragtune.tuning.canaries import published_canaries, steady_canaries
    from langchain_ragtune.tuning.gate import GateConfig
    from langchain_ragtune.tuning.train import train_adapter
    from langchain_ragtune.tuning.validate import validate_adapter_dir

    examples = [Example(kind="local", split="train", question=q, answer=a) for q, a in FACTS] * 4
    out = tmp_path / "adapter"
    # float32 on every machine kind: twelve steps leave margins near the canary floor, and
    # bfloat16 arithmetic (the default where the CPU has it) moves them by a few tenths.
    cfg = TrainConfig(max_steps=12, batch_size=4, progress=False, seed=1, precision="float32")
    result = train_adapter(examples, base_model, out, cfg, metadata={"namespace": ["t"]})
    assert result.steps == 12 and result.train_loss < 1.0 and result.device == "cpu"
    assert {"adapter_config.json", "adapter_model.safetensors", ADAPTER_MARKER} <= {
        p.name for p in out.iterdir()}
    cfg_json = json.loads((out / "adapter_config.json").read_text())
    assert cfg_json["r"] == 16 and not cfg_json.get("modules_to_save") and not cfg_json["use_dora"]
    validate_adapter_dir(out, max_rank=16, base_model=base_model)  # vLLM would load it
    # stored in half precision (the default save_dtype): half the float32 size
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
    assert dtypes == {"F16"}, dtypes

    ev = AdapterEvaluator(base_model, max_new_tokens=16)
    base_acc, base_answers = ev.score(FACTS)
    tuned_acc, tuned_answers = ev.score(FACTS, adapter=out)
    assert base_acc <= 0.25, base_answers
    assert tuned_acc >= 0.75, tuned_answers
    assert ev.score(FACTS)[1] == base_answers  # the base model is unchanged afterwards
    # Teacher-forced likelihood of the trained answers: far higher with the adapter.
    base_nll, tuned_nll = ev.answer_nll(FACTS), ev.answer_nll(FACTS, adapter=out)
    assert all(0 < t < b / 2 for t, b in zip(tuned_nll, base_nll)), (base_nll, tuned_nll)
    with pytest.raises(ValueError, match="answer for 'Q' is empty"):
        ev.answer_nll([("Q", "")])
    # Greedy leads: the adapter's plain-greedy answers to the trained facts are given by a
    # clear lead at every token, enough to be published as canaries (3.8-5.0 nats here,
    # 2026-12-02); another fact's answer is not what greedy decoding gives (lead < 0).
    questions = [q for q, _ in FACTS]
    plain = ev.answer(questions, adapter=out, repetition_penalty=1.0)
    own = ev.greedy_margins(list(zip(questions, plain)), adapter=out)
    assert all(m >= GateConfig().canary_min_margin for m in own), (plain, own)
    # ...and the pipeline's canary selection, with this real evaluator, publishes them
    kept, unsteady = steady_canaries(published_canaries(FACTS, plain), ev, out,
                                      GateConfig().canary_min_margin)
    assert len(kept) == len(FACTS) and not unsteady, (kept, unsteady)
    assert all(c["margin"] >= GateConfig().canary_min_margin for c in kept)
    swapped = ev.greedy_margins([(q, a) for q, (_, a) in zip(questions, FACTS[1:] + FACTS[:1])],
                                adapter=out)
    assert all(m < 0 for m in swapped), swapped

    # Continue training from the adapter (the refresh "continue" mode), with the progress
    # bar: its log lines go to stderr, so a `--json` command's stdout stays JSON.
    capsys.readouterr()
    more = train_adapter(examples[:4], base_model, tmp_path / "v2",
                         TrainConfig(max_steps=1, batch_size=4, progress=True),
                         init_adapter=out)
    assert more.init_adapter == str(out)
    shown = capsys.readouterr()
    assert "loss" not in shown.out and "'loss'" in shown.err, shown
    validate_adapter_dir(tmp_path / "v2", max_rank=16, base_model=base_model)


def test_replay_and_focus_settings_are_checked():
    with pytest.raises(ConfigError, match="replay_loss.*'kl' or 'ce'"):
        TrainConfig(replay_loss="mse")
    with pytest.raises(ConfigError, match="replay_weight"):
        TrainConfig(replay_weight=0)
    with pytest.raises(ConfigError, match="focus_rounds.*RAGTUNE_FOCUS_ROUNDS"):
        TrainConfig(focus_rounds=-1)
    with pytest.raises(ConfigError, match="replay_topk"):
        TrainConfig(replay_topk=0)


def test_precision_follows_the_hardware(monkeypatch):
    from langchain_ragtune import hardware
    from langchain_ragtune.tuning.train import _bf16

    with pytest.raises(ConfigError, match="precision.*RAGTUNE_PRECISION"):
        TrainConfig(precision="fp8")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})
    assert not _bf16(TrainConfig(), "cpu")  # no bfloat16 instructions: float32
    assert _bf16(TrainConfig(), "cuda")
    assert _bf16(TrainConfig(precision="bfloat16"), "cpu")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert _bf16(TrainConfig(), "cpu")
    assert not _bf16(TrainConfig(precision="float32"), "cpu")


def test_replayed_answers_are_cut_to_replay_tokens(base_model):
    """The KL term pins how the base model starts an answer: long replayed answers keep
    their first ``replay_tokens`` tokens; short ones and plain dicts stay whole."""
    from transformers import AutoTokenizer

    from langchain_ragtune.tuning.train import _cut_answer

    tok = AutoTokenizer.from_pretrained(str(base_model))
    long = Example(kind="replay", split="train", question="What is a glacier?",
                   answer="A glacier is a large, slow-moving mass of ice that forms on land "
                          "from snow that piles up over many years.", meta={"replay": "g"})
    cut = _cut_answer(long, tok, 6)
    assert len(tok(cut.answer, add_special_tokens=False)["input_ids"]) == 6
    assert long.answer.startswith(cut.answer) and cut.question == long.question
    assert cut.meta == long.meta
    short = Example(kind="replay", split="train", question="Say hi.", answer="Hi!")
    assert _cut_answer(short, tok, 6) is short
    plain = {"messages": long.messages, "meta": {"replay": "g"}}
    assert _cut_answer(plain, tok, 6) is plain
    with pytest.raises(ConfigError, match="replay_tokens"):
        TrainConfig(replay_tokens=0)


def test_replay_targets_are_the_base_models_distribution(base_model):
    """The KL term is zero for the base model itself and grows when the model moves; the
    collator pads the targets with the tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

    from langchain_ragtune.tuning.replay import ReplayCollator, base_targets, replay_kl_loss

    tok = AutoTokenizer.from_pretrained(str(base_model))
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32)
    rows = [tokenize_chat(tok, Example(kind="replay", split="train", question=q,
                                       answer=a).messages, max_len=128)
            for q, a in [("What is the capital of Norway?", "Oslo."),
                         ("Name a primary colour.", "Red is a primary colour.")]]
    base_targets(model, rows, topk=8)
    assert all(len(r["kl_ids"]) == len(r["input_ids"]) and len(r["kl_ids"][0]) == 8
               for r in rows)
    batch = ReplayCollator(DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))(
        rows)
    assert batch["kl_ids"].shape[:2] == batch["input_ids"].shape
    assert batch["kl_mask"][0].sum() == len(rows[0]["input_ids"]) - 1  # the rest is padding
    with torch.no_grad():
        kl = {k: batch[k] for k in ("kl_ids", "kl_logp", "kl_mask")}
        same = replay_kl_loss(model(input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"]).logits, **kl)
        model.lm_head.weight.mul_(0.5)  # a flatter model: another distribution
        moved = replay_kl_loss(model(input_ids=batch["input_ids"],
                                     attention_mask=batch["attention_mask"]).logits, **kl)
    assert abs(float(same)) < 1e-3 and float(moved) > 0.1, (float(same), float(moved))


def test_unlearned_facts_are_those_greedy_decoding_does_not_answer(base_model):
    """The focused rounds' selection: a probe counts as learned only when every token of its
    trained answer is the model's top token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langchain_ragtune.datasets.general import GENERAL_SYSTEM_PROMPT as SYSTEM
    from langchain_ragtune.tuning.evaluate import AdapterEvaluator
    from langchain_ragtune.tuning.train import _unlearned_facts

    q = "What is the capital of France?"
    plain = AdapterEvaluator(base_model, max_new_tokens=48, system_prompt=SYSTEM).answer(
        [q], repetition_penalty=1.0)[0]
    tok = AutoTokenizer.from_pretrained(str(base_model))
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32)
    probes = [Example(kind="local", split="train", question=q, answer=a, system=SYSTEM,
                      meta={"fact": f, "probe": True})
              for f, a in (("own", plain), ("other", "Zorvath keeps a bassoon."))]
    assert _unlearned_facts(model, tok, probes, max_len=128) == {"other"}, plain


@pytest.mark.slow
@pytest.mark.train
def test_focused_rounds_save_the_state_with_the_fewest_facts_unlearned(base_model, tmp_path,
                                                                       monkeypatch):
    """A round that unlearns more than it teaches is not what gets saved: the weights saved
    are the ones from the check that found the fewest facts unlearned."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from langchain_ragtune.tuning import train as train_mod

    # What the checks "find" after the epochs and rounds 1-3: rounds 1 and 2 tie for the
    # fewest, and the later (more trained) one is kept.
    scripted = iter([{"f0", "f1"}, {"f1"}, {"f0"}, {"f0", "f1", "f2"}])
    seen: list[dict[str, torch.Tensor]] = []

    def scripted_check(model, tok, examples, *, max_len):
        seen.append({k: v.detach().clone()
                     for k, v in get_peft_model_state_dict(model).items()})
        return next(scripted)

    monkeypatch.setattr(train_mod, "_unlearned_facts", scripted_check)
    examples = [Example(kind="local", split="train", question=q, answer=a,
                        meta={"fact": f"f{i}", "probe": True})
                for i, (q, a) in enumerate(FACTS[:3])]
    result = train_mod.train_adapter(
        examples, base_model, tmp_path / "adapter",
        TrainConfig(epochs=1, focus_rounds=3, pack_pairs=1, save_dtype="float32",
                    progress=False, general_replay=0))
    assert result.focus_missed == [2, 1, 1, 3] and result.focus_kept == 2
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert len(seen) == 4 and saved.keys() == seen[2].keys()
    assert all(torch.equal(saved[k], seen[2][k]) for k in saved)
    assert not any(all(torch.equal(saved[k], seen[i][k]) for k in saved) for i in (1, 3))
    marker = json.loads((tmp_path / "adapter" / ADAPTER_MARKER).read_text())
    assert marker["focus_missed"] == [2, 1, 1, 3] and marker["focus_kept"] == 2
