"""LoRA training of a causal LM on chat examples, with peft and the transformers ``Trainer``.

The loss covers the assistant's tokens only (the system prompt and the question are
context, not targets): each example is tokenised with the model's chat template and the
prompt part of the labels is masked with -100. Training is seeded, shows a progress bar,
sets torch's thread count explicitly, and runs on CPU or GPU (bfloat16 where the hardware
has it, see ``TrainConfig.precision``).

The adapter is written to the folder it is given, which the caller makes temporary: only a
complete, validated folder is renamed into place and registered (see
:mod:`~langchain_ragtune.tuning.gate`).

Example:
    >>> from langchain_ragtune.tuning.train import TrainConfig, train_adapter   # doctest: +SKIP
    >>> cfg = TrainConfig(epochs=1)
    >>> result = train_adapter(examples, "/models/smol", "/tmp/adapter", cfg)  # doctest: +SKIP
    >>> result.steps, round(result.train_loss, 2)                                # doctest: +SKIP
    (25, 1.73)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from langchain_ragtune.config import _from_env
from langchain_ragtune.errors import (
    ConfigError,
    DatasetError,
    DependencyMissingError,
    TrainingError,
)

__all__ = [
    "ADAPTER_MARKER",
    "DEFAULT_TARGET_MODULES",
    "TrainConfig",
    "TrainResult",
    "default_lora_config",
    "pack_examples",
    "tokenize_chat",
    "train_adapter",
]

log = logging.getLogger(__name__)

#: Llama-style attention and MLP projections (SmolLM2, Llama, Qwen, Mistral share them).
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                          "down_proj")
#: Written last into an adapter folder: training metadata, and the sign it is complete.
ADAPTER_MARKER = "ragtune-adapter.json"


@dataclass(kw_only=True)
class TrainConfig:
    """Training settings (every field also reads ``RAGTUNE_<FIELD>``; LoRA shape lives in
    :func:`default_lora_config`, a ``peft.LoraConfig``).

    The defaults were measured on SmolLM2-135M, 2 CPU cores, LoCoMo conv-26 distilled into
    fact questions (docs/benchmarks.md, "Parametric memory that knows"): r=16, alpha=32 on
    all attention and MLP projections; packed sequences of 12 question/answer pairs, one per
    step, so each epoch takes many optimizer steps (packs of 12 at batch 4 took 28 steps
    in 4 epochs and learned 7% of the facts; at batch 1, 125 steps, 58%); lr 2e-3 rather
    than 1e-3 (trained facts 68% vs 63%, held-out paraphrases 83% vs 70% after 5 epochs).

    Attributes:
        epochs: passes over the data.
        max_steps: stop after this many optimizer steps (``0`` = run all epochs).
        learning_rate: peak learning rate (linear decay).
        batch_size: examples per step (per device).
        grad_accum: gradient accumulation steps.
        max_seq_len: longest tokenised example; longer ones are cut (the answer's end goes).
        warmup_ratio: share of steps of linear warm-up.
        lora_r, lora_alpha, lora_dropout: the LoRA shape (see :func:`default_lora_config`).
        pack_pairs: question/answer pairs per training sequence. Short examples share one
            system prompt as consecutive chat turns (loss on every answer), so the CPU is
            spent on facts instead of repeated prompts and padding; two phrasings of one
            fact never share a sequence (an answer must come from the weights, not from an
            earlier turn). ``1`` trains each example alone.
        general_replay: general prompts with the base model's own answers mixed into the
            training data (:mod:`~langchain_ragtune.tuning.replay`), so the adapter does not
            forget what the base model knew. ``0`` turns replay off.
        replay_loss: ``"kl"``: the adapter matches the base model's next-token distribution
            (its top ``replay_topk`` tokens) at every position of the replayed sequences;
            ``"ce"``: cross-entropy on the base model's greedy answers.
        replay_topk: base-model tokens per position the ``"kl"`` loss matches.
        replay_weight: weight of the ``"kl"`` term against the facts' cross-entropy.
        replay_tokens: replayed answers are cut to their first this many tokens for the
            ``"kl"`` term, and packed twice as many to a sequence: general questions are
            judged on how an answer starts, and the target at the cut is still the base
            model's distribution (no early stop is taught), so twice the prompts fit in the
            same training tokens.
        focus_rounds: after the epochs, up to this many extra passes over the facts the
            adapter does not state yet (its probe question's trained answer is not what
            greedy decoding gives, teacher-forced), every form of each, with one probe of
            every learned fact and the replay kept in, so the others are not pulled away.
            A round can still unlearn more than it teaches (facts that share a subject and
            verb pull on one another), so the state saved is the one, after the epochs or
            after any round, with the fewest facts unlearned (the later of a tie). ``0``
            turns it off; no round runs once every fact is learned, nor when ``max_steps``
            bounds the run.
        save_dtype: the adapter file's float type: ``float16`` (the default) halves the file
            against ``float32`` (19.6 -> 9.8 MB for the default shape on SmolLM2-135M), and
            vLLM casts adapters to its own dtype on load anyway (bfloat16 with AVX-512,
            float32 otherwise; float16 keeps 3 more mantissa bits than bfloat16). The gate
            evaluates the saved file, so what it measures is what is served.
        precision: the training arithmetic. ``"auto"``: bfloat16 on a GPU and on CPUs that
            compute bfloat16 in hardware (AVX-512 BF16 or AMX: 1.45x the tokens per second
            of float32, same loss, see :func:`~langchain_ragtune.hardware.native_bf16`),
            float32 elsewhere; ``"bfloat16"`` or ``"float32"`` to choose. On a CPU the
            weights stay float32 and autocast computes in bfloat16.
        seed: seeds torch, data order and LoRA initialisation.
        torch_threads: threads torch uses (``ModelConfig.torch_threads`` by default).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        progress: show the trainer's progress bar.
    """

    epochs: float = 6.0
    max_steps: int = 0
    learning_rate: float = 2e-3
    batch_size: int = 1
    grad_accum: int = 1
    max_seq_len: int = 512
    warmup_ratio: float = 0.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    pack_pairs: int = 12
    general_replay: int = 200
    replay_loss: str = "kl"
    replay_topk: int = 16
    replay_weight: float = 3.0
    replay_tokens: int = 24
    focus_rounds: int = 4
    save_dtype: str = "float16"
    precision: str = "auto"
    seed: int = 0
    torch_threads: int = 2
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.general_replay, bool) or not isinstance(self.general_replay, int) \
                or self.general_replay < 0:
            raise ConfigError(f"TrainConfig.general_replay={self.general_replay!r} must be an "
                              "int >= 0 (RAGTUNE_GENERAL_REPLAY).")
        if self.replay_loss not in ("kl", "ce"):
            raise ConfigError(f"TrainConfig.replay_loss={self.replay_loss!r}: use 'kl' or 'ce' "
                              "(RAGTUNE_REPLAY_LOSS).")
        if isinstance(self.focus_rounds, bool) or not isinstance(self.focus_rounds, int) \
                or self.focus_rounds < 0:
            raise ConfigError(f"TrainConfig.focus_rounds={self.focus_rounds!r} must be an int "
                              ">= 0 (RAGTUNE_FOCUS_ROUNDS).")
        if not self.replay_weight > 0:
            raise ConfigError(f"TrainConfig.replay_weight={self.replay_weight!r} must be > 0 "
                              "(RAGTUNE_REPLAY_WEIGHT).")
        for name in ("batch_size", "grad_accum", "max_seq_len", "lora_r", "lora_alpha",
                     "torch_threads", "pack_pairs", "replay_topk", "replay_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"TrainConfig.{name}={v!r} must be a positive int "
                                  f"(RAGTUNE_{name.upper()}).")
        if self.save_dtype not in _SAVE_DTYPES:
            raise ConfigError(f"TrainConfig.save_dtype={self.save_dtype!r}: use one of "
                              f"{', '.join(_SAVE_DTYPES)} (RAGTUNE_SAVE_DTYPE).")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError(f"TrainConfig needs epochs > 0 or max_steps > 0, got "
                              f"epochs={self.epochs!r}, max_steps={self.max_steps!r}.")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"TrainConfig.learning_rate={self.learning_rate!r} must be in "
                              "(0, 1).")
        if not 0 <= self.lora_dropout < 1 or not 0 <= self.warmup_ratio < 1:
            raise ConfigError("TrainConfig.lora_dropout and warmup_ratio must be in [0, 1).")
        if self.precision not in ("auto", "bfloat16", "float32"):
            raise ConfigError(f"TrainConfig.precision={self.precision!r}: use 'auto', "
                              "'bfloat16' or 'float32' (RAGTUNE_PRECISION).")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"TrainConfig.device={self.device!r}: use 'auto', 'cpu' or 'cuda'.")

    @classmethod
    def from_env(cls, **overrides: Any) -> "TrainConfig":
        """Read ``RAGTUNE_*`` variables; keyword arguments win."""
        return _from_env(cls, overrides)


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        path: the adapter folder written.
        steps: optimizer steps taken.
        train_loss: mean training loss.
        seconds: wall time of training (not loading).
        examples: training examples used.
        tokens: tokens in the training set (one epoch).
        sequences: training sequences (examples packed together, see ``pack_pairs``).
        answer_tokens: tokens the loss is on (the answers), one epoch.
        train_tokens: tokens processed over the whole run (every epoch and step).
        device: where it ran.
        init_adapter: the adapter it continued from, if any.
        focus_missed: facts not learned yet after the epochs and after each focused round
            (``TrainConfig.focus_rounds``); a last ``0`` means every fact was learned.
        focus_kept: the state saved: ``0`` after the epochs, ``k`` after focused round
            ``k`` (the one with the fewest facts unlearned, the later on a tie); None
            without focused rounds.
    """

    path: Path
    steps: int
    train_loss: float
    seconds: float
    examples: int
    tokens: int
    device: str
    init_adapter: str | None = None
    log_history: list[dict[str, Any]] = field(default_factory=list)
    sequences: int = 0
    answer_tokens: int = 0
    train_tokens: int = 0
    focus_missed: list[int] = field(default_factory=list)
    focus_kept: int | None = None

    @property
    def tokens_per_s(self) -> float:
        """Training throughput: tokens processed per second of training."""
        return round(self.train_tokens / self.seconds, 1) if self.seconds else 0.0


def default_lora_config(config: TrainConfig | None = None, **overrides: Any) -> Any:
    """The ``peft.LoraConfig`` used for training: vLLM-servable by construction.

    No ``modules_to_save``, no DoRA, ``bias="none"``, rank ``config.lora_r``: the limits vLLM
    checks when it loads an adapter.

    Example:
        >>> cfg = default_lora_config(TrainConfig(lora_r=8))   # doctest: +SKIP
        >>> cfg.r, cfg.lora_alpha, cfg.bias                    # doctest: +SKIP
        (8, 32, 'none')
    """
    try:
        from peft import LoraConfig
    except ImportError:
        raise DependencyMissingError("peft", "train", "LoRA training") from None
    config = config or TrainConfig()
    kwargs: dict[str, Any] = dict(r=config.lora_r, lora_alpha=config.lora_alpha,
                                  lora_dropout=config.lora_dropout,
                                  target_modules=list(DEFAULT_TARGET_MODULES), bias="none",
                                  task_type="CAUSAL_LM", use_dora=False, modules_to_save=None)
    kwargs.update(overrides)
    return LoraConfig(**kwargs)


def tokenize_chat(tokenizer: Any, messages: Sequence[dict[str, str]], *, max_len: int
                  ) -> dict[str, list[int]] | None:
    """Token ids and labels of one chat example, with loss on its assistant turns only.

    Every assistant turn is a target (a packed sequence holds several answers); system and
    user turns are context. Returns None when the first prompt alone fills ``max_len``
    (nothing would be learned).

    Example:
        >>> enc = tokenize_chat(tok, [{"role": "user", "content": "Hi"},       # doctest: +SKIP
        ...                           {"role": "assistant", "content": "Hello"}], max_len=64)
        >>> enc["labels"][:3]                                                   # doctest: +SKIP
        [-100, -100, -100]
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise DatasetError(f"a training example must end with an assistant message, got "
                           f"{[m.get('role') for m in messages]}.")

    def ids(msgs: Sequence[dict[str, str]], gen: bool) -> list[int]:
        enc = tokenizer.apply_chat_template(list(msgs), add_generation_prompt=gen, tokenize=True)
        return list(enc["input_ids"] if hasattr(enc, "keys") else enc)

    full = ids(messages, False)
    labels = [-100] * len(full)
    first_prompt: int | None = None
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        prompt = ids(messages[:i], True)
        upto = ids(messages[: i + 1], False)
        if full[: len(prompt)] != prompt:  # templates that re-render earlier turns
            prompt = prompt[: max(0, len(prompt) - 1)]
            if full[: len(prompt)] != prompt:
                raise DatasetError("the chat template does not render the prompt as a prefix "
                                   "of the full conversation; use a model with a standard "
                                   "template.")
        if first_prompt is None:
            first_prompt = len(prompt)
        labels[len(prompt): len(upto)] = full[len(prompt): len(upto)]
    if first_prompt is None or first_prompt >= max_len:
        return None
    full, labels = full[:max_len], labels[:max_len]
    return {"input_ids": full, "attention_mask": [1] * len(full), "labels": labels}


def pack_examples(examples: Sequence[Any], *, pairs: int, seed: int = 0
                  ) -> list[list[dict[str, str]]]:
    """Chat examples joined into multi-turn sequences of up to ``pairs`` question/answer
    pairs under one system prompt.

    Examples with another system prompt, or with more than one exchange, stay alone. Two
    examples of one fact (``meta["fact"]``) never share a sequence: a later answer could be
    copied from the earlier turn instead of recalled. The order is shuffled (seeded).

    Example:
        >>> ex = [{"messages": [{"role": "system", "content": "S"},
        ...                     {"role": "user", "content": f"Q{i}"},
        ...                     {"role": "assistant", "content": f"A{i}"}],
        ...        "meta": {"fact": str(i % 3)}} for i in range(6)]
        >>> packs = pack_examples(ex, pairs=3)
        >>> [len(p) for p in packs]
        [7, 7]
        >>> all(len({m["content"][1:] for m in p if m["role"] == "user"}) == 3 for p in packs)
        True
    """
    import random

    rng = random.Random(seed)
    alone: list[list[dict[str, str]]] = []
    groups: dict[str, list[tuple[str, list[dict[str, str]]]]] = {}
    for e in examples:
        msgs = list(e.messages if hasattr(e, "messages") else e["messages"])
        meta = (e.meta if hasattr(e, "meta") else e.get("meta")) or {}
        roles = [m.get("role") for m in msgs]
        if pairs <= 1 or roles not in (["system", "user", "assistant"], ["user", "assistant"]):
            alone.append(msgs)
            continue
        system = msgs[0]["content"] if roles[0] == "system" else ""
        groups.setdefault(system, []).append((str(meta.get("fact", id(e))), msgs))
    packs: list[list[dict[str, str]]] = []
    for system, items in groups.items():
        rng.shuffle(items)
        open_packs: list[tuple[set[str], list[dict[str, str]]]] = []
        for fact, msgs in items:
            turn = msgs[-2:]
            target = next((p for p in open_packs if fact not in p[0]), None)
            if target is None:
                head = [{"role": "system", "content": system}] if system else []
                target = (set(), head)
                open_packs.append(target)
            target[0].add(fact)
            target[1].extend(turn)
            if len(target[0]) >= pairs:
                packs.append(target[1])
                open_packs.remove(target)
        packs.extend(p[1] for p in open_packs)
    out = packs + alone
    rng.shuffle(out)
    return out


def _meta(example: Any) -> dict[str, Any]:
    return (example.meta if hasattr(example, "meta") else example.get("meta")) or {}


def _is_replay(example: Any) -> bool:
    return bool(_meta(example).get("replay"))


def _is_probe(example: Any) -> bool:
    return bool(_meta(example).get("probe"))


def _fact(example: Any) -> str | None:
    fact = _meta(example).get("fact")
    return None if fact is None else str(fact)


def _unlearned_facts(model: Any, tok: Any, examples: Sequence[Any], *, max_len: int
                     ) -> set[str]:
    """Facts whose probe question the model does not answer with its trained answer under
    greedy decoding (teacher-forced: one forward pass per probe, every answer token must be
    the model's top token)."""
    import torch

    missed = set()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for e in examples:
                if not _is_probe(e) or _fact(e) is None:
                    continue
                msgs = list(e.messages if hasattr(e, "messages") else e["messages"])
                enc = tokenize_chat(tok, msgs, max_len=max_len)
                if enc is None:
                    continue
                ids = torch.tensor([enc["input_ids"]], device=model.device)
                labels = torch.tensor(enc["labels"][1:], device=model.device)
                top = model(input_ids=ids).logits[0, :-1].argmax(-1)
                on = labels != -100
                if not bool((top[on] == labels[on]).all()):
                    missed.add(_fact(e))
    finally:
        model.train(was_training)
    return missed


def _lora_weights(model: Any) -> dict[str, Any]:
    """A copy of the adapter's trainable weights (the state dict shares the parameters'
    storage, which training goes on changing)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def _cut_answer(example: Any, tok: Any, n_tokens: int) -> Any:
    """A replayed example whose answer keeps its first ``n_tokens`` tokens."""
    if not dataclasses.is_dataclass(example):  # a plain dict: kept whole
        return example
    ids = tok(example.answer, add_special_tokens=False)["input_ids"]
    if len(ids) <= n_tokens:
        return example
    return dataclasses.replace(example, answer=tok.decode(ids[:n_tokens]))


def _show_progress(trainer: Any, progress: bool) -> None:
    """The trainer's bar on stderr, or nothing at all (without a bar the trainer prints
    every log dict instead)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if not progress:
        trainer.remove_callback(PrinterCallback)
    else:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(stderr_progress_callback())


def _device(config: TrainConfig) -> str:
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("TrainConfig.device='cuda' but torch sees no CUDA GPU; use 'auto'.")
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device


def _bf16(config: TrainConfig, device: str) -> bool:
    if config.precision != "auto":
        return config.precision == "bfloat16"
    if device == "cuda":
        return True
    from langchain_ragtune.hardware import native_bf16

    return native_bf16()


def stderr_progress_callback() -> Any:
    """transformers' progress bar, with its log lines on stderr as well.

    The stock ``ProgressCallback`` writes each log dict (loss, learning rate) with
    ``tqdm.write``, which goes to stdout: inside ``ragtune demo --json`` or ``refresh --json``
    those lines came before the JSON and broke it for the programs that read it.
    """
    import sys

    from transformers.trainer_callback import ProgressCallback

    class StderrProgressCallback(ProgressCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if state.is_world_process_zero and self.training_bar is not None and logs:
                shown = {k: f"{v:.4g}" if isinstance(v, float) else v
                         for k, v in logs.items() if k != "total_flos"}
                self.training_bar.write(str(shown), file=sys.stderr)

    return StderrProgressCallback()


_SAVE_DTYPES = ("float16", "bfloat16", "float32")


def _cast_saved_adapter(folder: Path, dtype: str) -> None:
    """Rewrite the saved LoRA weights in ``dtype`` (atomically: a new file, then a rename)."""
    if dtype == "float32":
        return
    import torch
    from safetensors.torch import load_file, save_file

    path = Path(folder) / "adapter_model.safetensors"
    target = getattr(torch, dtype)
    tensors = {k: (v.to(target) if v.is_floating_point() else v)
               for k, v in load_file(str(path)).items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)


def train_adapter(examples: Sequence[Any], base_model: str | Path, output_dir: str | Path,
                  config: TrainConfig | None = None, *, init_adapter: str | Path | None = None,
                  lora_config: Any = None, callbacks: Sequence[Any] = (),
                  metadata: dict[str, Any] | None = None) -> TrainResult:
    """Train a LoRA adapter on chat examples and save it into ``output_dir``.

    Args:
        examples: :class:`~langchain_ragtune.distill.dataset.Example` objects or dicts with
            ``messages`` (system/user/assistant).
        base_model: the base model folder.
        output_dir: where the adapter goes (``adapter_config.json``,
            ``adapter_model.safetensors``, :data:`ADAPTER_MARKER`).
        config: training settings.
        init_adapter: continue training this adapter instead of starting a fresh one.
        lora_config: a ``peft.LoraConfig`` (default: :func:`default_lora_config`).
        callbacks: extra ``transformers.TrainerCallback`` objects.
        metadata: extra fields for the marker file (namespace, dataset id...).

    Returns:
        A :class:`TrainResult`.

    Raises:
        DatasetError: no usable training example.
        TrainingError: training failed (the folder may hold partial files: the caller
            deletes it).
    """
    config = config or TrainConfig.from_env()
    try:
        import torch
        import transformers
        from peft import PeftModel, get_peft_model
        from transformers import (
            AutoModelForCausalLM,
            AutoTokenizer,
            DataCollatorForSeq2Seq,
            Trainer,
            TrainingArguments,
        )
    except ImportError as exc:
        raise DependencyMissingError(exc.name or "transformers", "train", "LoRA training") from None

    torch.set_num_threads(config.torch_threads)
    transformers.set_seed(config.seed)
    device = _device(config)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(base_model))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows, kl_rows = [], []
    examples = list(examples)
    # Replayed general prompts trained towards the base model's distribution go apart.
    to_kl = [config.replay_loss == "kl" and _is_replay(e) for e in examples]
    kl_group = [_cut_answer(e, tok, config.replay_tokens)
                for e, k in zip(examples, to_kl) if k]
    for group, into, pairs in (([e for e, k in zip(examples, to_kl) if not k], rows,
                                config.pack_pairs),
                               (kl_group, kl_rows, 2 * config.pack_pairs)):
        for msgs in pack_examples(group, pairs=pairs, seed=config.seed):
            enc = tokenize_chat(tok, msgs, max_len=config.max_seq_len)
            if enc is not None:
                into.append(enc)
    if not rows:
        raise DatasetError("no training example fits max_seq_len="
                           f"{config.max_seq_len} (or there are none); distill first or raise "
                           "RAGTUNE_MAX_SEQ_LEN.")
    bf16 = _bf16(config, device)
    # On a GPU the weights themselves are bfloat16; on a CPU autocast computes in bfloat16
    # over float32 weights (the optimizer's updates are too small for bfloat16 weights).
    dtype = torch.bfloat16 if device == "cuda" and bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=dtype)
    if init_adapter:
        model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    else:
        model = get_peft_model(model, lora_config or default_lora_config(config))
    if kl_rows:
        from langchain_ragtune.tuning.replay import base_targets

        base_targets(model, kl_rows, topk=config.replay_topk)
        for r in kl_rows:
            r["labels"] = [-100] * len(r["labels"])
        rows.extend(kl_rows)
    args = TrainingArguments(
        output_dir=str(output_dir / ".trainer"),
        num_train_epochs=float(config.epochs) if config.epochs > 0 else 1.0,
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        warmup_steps=float(config.warmup_ratio),  # a float in [0, 1) is a ratio of all steps
        lr_scheduler_type="linear",
        # Batches of similar lengths: little padding when short quotes and long aggregated
        # answers mix (still shuffled, and seeded).
        train_sampling_strategy="group_by_length",
        weight_decay=0.0,
        logging_steps=max(1, min(10, len(rows) // config.batch_size or 1)),
        save_strategy="no",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device == "cpu",
        bf16=bf16,
        dataloader_num_workers=0,
        dataloader_pin_memory=device == "cuda",
        disable_tqdm=not config.progress,
        remove_unused_columns=False,
    )
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100,
                                      pad_to_multiple_of=8)
    trainer_cls: Any = Trainer
    if kl_rows:
        from langchain_ragtune.tuning.replay import ReplayCollator, replay_kl_trainer

        collator = ReplayCollator(collator)
        trainer_cls = replay_kl_trainer(Trainer, config.replay_weight)

    def run(rows_: list[dict[str, Any]], args_: Any, what: str) -> tuple[Any, Any]:
        trainer = trainer_cls(model=model, args=args_, train_dataset=rows_,
                              data_collator=collator, callbacks=list(callbacks))
        _show_progress(trainer, config.progress)
        try:
            return trainer, trainer.train()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            raise TrainingError(f"{what} failed after {time.monotonic() - started:.0f} s: "
                                f"{type(exc).__name__}: {exc}. The previous adapter stays "
                                "published.") from exc

    started = time.monotonic()
    trainer, out = run(rows, args, "training")
    steps = int(out.global_step)
    per_epoch = max(1, math.ceil(len(rows) / (config.batch_size * config.grad_accum)))
    tok_count = sum(len(r["input_ids"]) for r in rows)
    train_tokens = tok_count * steps / per_epoch
    loss_sum = float(out.training_loss) * steps
    history = list(trainer.state.log_history)
    focus: list[int] = []
    rounds = config.focus_rounds if config.max_steps <= 0 else 0
    best: tuple[int, int, dict[str, Any]] | None = None  # (missed, round, LoRA weights)
    for i in range(rounds + 1 if rounds else 0):
        missed = _unlearned_facts(model, tok, examples, max_len=config.max_seq_len)
        focus.append(len(missed))
        if best is None or len(missed) <= best[0]:  # a tie goes to the more trained state
            best = (len(missed), i, _lora_weights(model))
        if not missed or i == rounds:
            break
        again = [e for e in examples
                 if (_fact(e) in missed and not _is_replay(e))
                 or (_is_probe(e) and _fact(e) not in missed)
                 or (_is_replay(e) and config.replay_loss == "ce")]
        round_rows = [r for r in (tokenize_chat(tok, m, max_len=config.max_seq_len)
                                  for m in pack_examples(again, pairs=config.pack_pairs,
                                                         seed=config.seed + 1 + i))
                      if r is not None] + kl_rows
        # Half the peak rate, decaying again: the facts are close, and the rest is learned.
        round_args = dataclasses.replace(args, num_train_epochs=1.0, max_steps=-1,
                                         learning_rate=config.learning_rate / 2)
        trainer, more = run(round_rows, round_args, f"focused round {i + 1}")
        steps += int(more.global_step)
        loss_sum += float(more.training_loss) * int(more.global_step)
        train_tokens += sum(len(r["input_ids"]) for r in round_rows)
        history.extend(trainer.state.log_history)
    # A focused round can pull learned facts away while it teaches the missed ones (facts
    # that share a subject and verb pull on one another): the state with the fewest facts
    # unlearned is the one saved, whichever round it came from.
    focus_kept = None
    if best is not None:
        focus_kept = best[1]
        if best[1] != len(focus) - 1:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(model, best[2])
    seconds = time.monotonic() - started
    # Only the LoRA weights: embeddings are not trained, and vLLM rejects extra modules.
    model.save_pretrained(str(output_dir), save_embedding_layers=False)
    _cast_saved_adapter(output_dir, config.save_dtype)
    result = TrainResult(path=output_dir, steps=steps,
                         train_loss=loss_sum / max(1, steps), seconds=round(seconds, 2),
                         examples=len(examples), tokens=tok_count, device=device,
                         init_adapter=str(init_adapter) if init_adapter else None,
                         log_history=history, sequences=len(rows),
                         answer_tokens=sum(sum(x != -100 for x in r["labels"]) for r in rows),
                         train_tokens=round(train_tokens), focus_missed=focus,
                         focus_kept=focus_kept)
    import shutil

    shutil.rmtree(output_dir / ".trainer", ignore_errors=True)
    marker = {"base_model": str(base_model), "train": asdict(config), "steps": result.steps,
              "train_loss": result.train_loss, "seconds": result.seconds,
              "examples": result.examples, "tokens": tok_count, "device": device,
              "sequences": result.sequences, "train_tokens": result.train_tokens,
              "focus_missed": focus, "focus_kept": focus_kept,
              "init_adapter": result.init_adapter,
              "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              **(metadata or {})}
    (output_dir / ADAPTER_MARKER).write_text(json.dumps(marker, indent=2, default=str))
    return result
