"""Closed-book evaluation of adapters and the publish gate.

Closed-book means no retrieved context: the question goes to the model under the memory
system prompt, and the answer counts as correct when it holds at least half of the expected
content words that the question does not already give away
(:func:`~langchain_ragtune.distill.pipeline.is_correct`). The held-out set asks about trained
facts in words the adapter never saw; canaries are trained questions with known answers.

:func:`gate` is the pure decision: a new version may be published only if neither score
falls below the previous version's by more than the tolerance.

Example:
    >>> gate({"closed_book": 0.40, "canary": 1.0}, {"closed_book": 0.55, "canary": 1.0},
    ...      tolerance=0.05)
    (True, [])
    >>> gate({"closed_book": 0.60}, {"closed_book": 0.40}, tolerance=0.05)[0]
    False
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from langchain_ragtune.distill.dataset import MEMORY_SYSTEM_PROMPT
from langchain_ragtune.errors import DependencyMissingError

__all__ = ["AdapterEvaluator", "accuracy", "canary_span", "check_canary", "gate",
           "general_knowledge"]

log = logging.getLogger(__name__)


def accuracy(answers: Sequence[str], qa: Sequence[tuple[str, str]], *, threshold: float = 0.5
             ) -> float | None:
    """Share of answers that hold the expected facts (None for an empty set)."""
    from langchain_ragtune.distill.pipeline import is_correct

    if not qa:
        return None
    hits = sum(is_correct(a, q, e, threshold=threshold) for a, (q, e) in zip(answers, qa))
    return round(hits / len(qa), 4)


def check_canary(answer: str, canary: Mapping[str, str], *, threshold: float = 0.5) -> bool:
    """Whether ``answer`` passes a canary ``{"question", "expected"}`` (what serving checks).

    Example:
        >>> canary = {"question": "What did Ann say about Toby?", "expected": "We adopted Toby."}
        >>> check_canary('On 9 June, Ann said: "We adopted Toby."', canary)
        True
    """
    from langchain_ragtune.distill.pipeline import is_correct

    return is_correct(answer, canary["question"], canary["expected"], threshold=threshold)


def canary_span(answer: str, reference: str, *, min_content_words: int = 1) -> str | None:
    """The longest run of the answer's words that the reference also contains, or None.

    The serving side checks a canary by containment (the expected text must appear in the
    served answer), so a published canary's ``expected`` is a verbatim span of the answer
    the adapter gave in-process, one that is also in the source turn: what the adapter must
    say again once vLLM serves it.

    Example:
        >>> canary_span('On 9 June, Ann said: "We adopted Toby, a beagle."',
        ...             "We adopted Toby, a beagle, last spring.")
        'We adopted Toby, a beagle'
    """
    from langchain_ragtune.distill.text import content_words

    def norm(s: str) -> str:
        return " ".join(s.casefold().split())

    ref = norm(reference)
    toks = answer.split()
    best = ""
    for i in range(len(toks)):
        for j in range(len(toks), i, -1):
            if j - i <= len(best.split()):
                break
            cand = " ".join(toks[i:j])
            core = cand.strip("\"'“”()[].,!?;:")
            if core and norm(core) in ref and len(content_words(core)) >= min_content_words:
                best = cand if norm(cand) in ref else core
                break
    return best.strip("\"'“”()[] ") or None


def gate(before: Mapping[str, float | None], after: Mapping[str, float | None], *,
         tolerance: float = 0.05, floors: Mapping[str, float] | None = None
         ) -> tuple[bool, list[str]]:
    """Whether a new version may replace the previous one, and why not.

    Every score present in both (``closed_book``, ``canary``) must satisfy
    ``after >= before - tolerance``; every score named in ``floors`` must reach its floor
    after (``trained_fact_recall``: the adapter learned enough to be worth serving;
    ``general_kept``: it did not make the model forget what it knew). Scores that are None
    (no questions) are skipped.

    Example:
        >>> gate({}, {"general_kept": 0.8}, floors={"general_kept": 0.9})
        (False, ['general_kept is 0.800, below the floor 0.9'])
    """
    reasons = []
    for key, floor in sorted((floors or {}).items()):
        a = after.get(key)
        if a is not None and a < floor:
            reasons.append(f"{key} is {a:.3f}, below the floor {floor}")
    for key in sorted(set(before) & set(after)):
        b, a = before[key], after[key]
        if a is None or b is None:
            continue
        if a < b - tolerance:
            reasons.append(f"{key} accuracy fell from {b:.3f} to {a:.3f} (tolerance {tolerance})")
    return not reasons, reasons


def general_knowledge(evaluator: Any, adapter: str | Path, *,
                      questions: Sequence[tuple[str, str]] | None = None,
                      cache_dir: str | Path | None = None) -> dict[str, Any]:
    """How much of what the base model knows the adapter still answers.

    The base model answers the general set (:mod:`langchain_ragtune.datasets.general`) once
    per base model and set (cached in ``cache_dir``); the adapter answers the questions the
    base model got right, under the same plain assistant prompt. Returns ``general_kept`` (share kept),
    ``general_base_right``, ``general_questions`` and up to five ``general_lost``.
    """
    import hashlib
    import json

    from langchain_ragtune.datasets.general import GENERAL_SYSTEM_PROMPT, load_general_questions
    from langchain_ragtune.distill.pipeline import is_correct

    qa = list(questions or load_general_questions())
    key = hashlib.sha256(json.dumps([str(getattr(evaluator, "base_model", "")),
                                     GENERAL_SYSTEM_PROMPT,
                                     getattr(evaluator, "max_new_tokens", 0), qa]
                                    ).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"general-base-{key}.json" if cache_dir else None
    base_answers: list[str] | None = None
    if cache is not None and cache.is_file():
        base_answers = json.loads(cache.read_text(encoding="utf-8"))
    if base_answers is None or len(base_answers) != len(qa):
        base_answers = evaluator.answer([q for q, _ in qa], adapter=None,
                                        system_prompt=GENERAL_SYSTEM_PROMPT)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(base_answers), encoding="utf-8")
    right = [(q, e) for (q, e), a in zip(qa, base_answers) if is_correct(a, q, e)]
    answers = evaluator.answer([q for q, _ in right], adapter=adapter,
                               system_prompt=GENERAL_SYSTEM_PROMPT) if right else []
    lost = [(q, e, a) for (q, e), a in zip(right, answers) if not is_correct(a, q, e)]
    return {"general_kept": round(1 - len(lost) / len(right), 4) if right else None,
            "general_base_right": len(right), "general_questions": len(qa),
            "general_lost": [{"question": q, "expected": e, "answer": a}
                             for q, e, a in lost[:5]]}


@dataclass
class AdapterEvaluator:
    """Answers questions closed-book with the base model and any adapters, in one process.

    The base model loads once; adapters are attached with peft under their own names and
    switched with ``set_adapter``; the base model answers with adapters disabled. Greedy,
    batched (left padding), bounded answer length.

    Args:
        base_model: the base model folder.
        system_prompt: the memory system prompt the adapters were trained under.
        max_new_tokens: the longest answer.
        batch_size: questions per generate call.
        torch_threads: threads torch uses.
        repetition_penalty: keeps the small model from looping in evaluation answers;
            ``1.0`` is plain greedy decoding (what a temperature-0 client such as the serving
            side's canary check gets).

    Example:
        >>> ev = AdapterEvaluator("/models/smol")                          # doctest: +SKIP
        >>> ev.answer(["Where does Ann live?"], adapter="/adapters/u/v1")   # doctest: +SKIP
        ['Ann lives in Lisbon.']
    """

    base_model: str | Path
    system_prompt: str = MEMORY_SYSTEM_PROMPT
    max_new_tokens: int = 64
    batch_size: int = 16
    torch_threads: int = 2
    repetition_penalty: float = 1.1

    def __post_init__(self) -> None:
        self._tok: Any = None
        self._model: Any = None
        self._names: dict[str, str] = {}

    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise DependencyMissingError(exc.name or "transformers", "train",
                                         "Closed-book evaluation") from None
        torch.set_num_threads(self.torch_threads)
        self._tok = AutoTokenizer.from_pretrained(str(self.base_model), padding_side="left")
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        self._model = AutoModelForCausalLM.from_pretrained(str(self.base_model), dtype=dtype)
        if torch.cuda.is_available():
            self._model.to("cuda")
        self._model.eval()

    def _use(self, adapter: str | Path | None) -> Any:
        """The model to generate with: the base (adapters disabled) or ``adapter`` active."""
        import contextlib

        from peft import PeftModel

        if adapter is None:
            if isinstance(self._model, PeftModel):
                return self._model.disable_adapter()
            return contextlib.nullcontext()
        key = str(Path(adapter).resolve())
        if key not in self._names:
            name = f"a{len(self._names)}"
            if isinstance(self._model, PeftModel):
                self._model.load_adapter(key, adapter_name=name)
            else:
                self._model = PeftModel.from_pretrained(self._model, key, adapter_name=name)
            self._model.eval()
            self._names[key] = name
        self._model.set_adapter(self._names[key])
        return contextlib.nullcontext()

    def _prompt(self, question: str, system: str | None) -> str:
        """The chat prompt up to the assistant's turn (no system turn when ``system`` is None)."""
        return self._tok.apply_chat_template(
            ([{"role": "system", "content": system}] if system is not None else [])
            + [{"role": "user", "content": question}], add_generation_prompt=True,
            tokenize=False)

    def answer(self, questions: Sequence[str], *, adapter: str | Path | None = None,
               progress: bool = False, system_prompt: Any = ...,
               max_new_tokens: int | None = None,
               repetition_penalty: float | None = None) -> list[str]:
        """Closed-book answers to ``questions`` with ``adapter`` (None = the base model).

        ``system_prompt`` overrides the memory prompt; ``None`` sends the question alone
        (the model's template then adds its default system prompt), as a bare client does.
        ``repetition_penalty`` overrides the evaluator's (``1.0``: plain greedy).
        """
        import torch

        system = self.system_prompt if system_prompt is ... else system_prompt

        self._load()
        out: list[str] = []
        ctx = self._use(adapter)
        batches = range(0, len(questions), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="evaluate", unit="batch", leave=False)
        with ctx:
            for i in batches:
                chunk = questions[i:i + self.batch_size]
                prompts = [self._prompt(q, system) for q in chunk]
                enc = self._tok(prompts, return_tensors="pt", padding=True,
                                add_special_tokens=False).to(self._model.device)
                with torch.no_grad():
                    gen = self._model.generate(**enc,
                                               max_new_tokens=max_new_tokens or self.max_new_tokens,
                                               do_sample=False,
                                               repetition_penalty=repetition_penalty
                                               or self.repetition_penalty,
                                               pad_token_id=self._tok.pad_token_id)
                width = enc["input_ids"].shape[1]
                out.extend(self._tok.decode(g[width:], skip_special_tokens=True).strip()
                           for g in gen)
        return out

    def _teacher_forced(self, qa: Sequence[tuple[str, str]], adapter: str | Path | None,
                        system_prompt: Any) -> Iterator[tuple[Any, Any]]:
        """For each (question, answer): the log-probabilities over the vocabulary at each
        answer position (float32, one row per answer token) and the answer's token ids."""
        import torch

        system = self.system_prompt if system_prompt is ... else system_prompt
        self._load()
        with self._use(adapter), torch.no_grad():
            # One pair per forward pass: no padding, so positions are exactly those of a
            # chat request (left padding would shift them without explicit position ids).
            for question, answer in qa:
                p = self._tok(self._prompt(question, system),
                              add_special_tokens=False)["input_ids"]
                a = self._tok(answer, add_special_tokens=False)["input_ids"]
                if not a:
                    raise ValueError(f"answer for {question!r} is empty; give each question "
                                     "the text it should be answered with.")
                ids = torch.tensor([p + a], device=self._model.device)
                logits = self._model(input_ids=ids).logits[0, len(p) - 1:-1].float()
                yield torch.log_softmax(logits, dim=-1), ids[0, len(p):]

    def answer_nll(self, qa: Sequence[tuple[str, str]], *, adapter: str | Path | None = None,
                   system_prompt: Any = ...) -> list[float]:
        """Mean negative log-likelihood per token of each answer, given its question.

        Teacher-forced: the model reads the chat prompt and the answer, and only the
        answer's tokens are scored. It measures how strongly the weights hold a memory
        even where greedy decoding of a small model drifts to a neighbouring one (a
        135M model often answers with the right speaker and date but another turn).
        Lower is better; compare the same pairs with and without ``adapter``.
        """
        return [float(-logp.gather(1, target[:, None]).mean())
                for logp, target in self._teacher_forced(qa, adapter, system_prompt)]

    def greedy_leads(self, qa: Sequence[tuple[str, str]], *,
                     adapter: str | Path | None = None,
                     system_prompt: Any = ...) -> list[list[float]]:
        """Per answer token, its lead in nats over the best other token (teacher-forced).

        Negative where another token would be picked. ``ragtune bench canary_margin``
        compares these with the served model's to measure how far numeric precision moves
        them.
        """
        out = []
        for logp, target in self._teacher_forced(qa, adapter, system_prompt):
            chosen = logp.gather(1, target[:, None])[:, 0]
            others = logp.scatter(1, target[:, None], float("-inf"))
            out.append((chosen - others.max(dim=1).values).tolist())
        return out

    def greedy_margins(self, qa: Sequence[tuple[str, str]], *,
                       adapter: str | Path | None = None,
                       system_prompt: Any = ...) -> list[float]:
        """How firmly greedy decoding produces each answer: the smallest lead, in nats, of
        the answer's token over the best other token at any of its positions
        (:meth:`greedy_leads`).

        Teacher-forced like :meth:`answer_nll`. Negative when some other token would be
        picked, i.e. greedy decoding would not produce this answer. A small positive margin
        is a near tie that another numeric precision can flip: the same adapter served in
        bfloat16 (vLLM's default on AVX-512 CPUs and GPUs) moved leads by up to 0.83 nats
        against this float32 evaluation (see ``GateConfig.canary_min_margin``).
        """
        return [min(leads) for leads in self.greedy_leads(qa, adapter=adapter,
                                                           system_prompt=system_prompt)]

    def general_knowledge(self, adapter: str | Path, *, cache_dir: str | Path | None = None
                          ) -> dict[str, Any]:
        """:func:`general_knowledge` with this evaluator."""
        return general_knowledge(self, adapter, cache_dir=cache_dir)

    def score(self, qa: Sequence[tuple[str, str]], *, adapter: str | Path | None = None,
              progress: bool = False, **kwargs: Any) -> tuple[float | None, list[str]]:
        """Closed-book accuracy on (question, expected) pairs, and the answers.

        Extra keyword arguments (``system_prompt``, ``max_new_tokens``,
        ``repetition_penalty``) go to :meth:`answer`.
        """
        if not qa:
            return None, []
        answers = self.answer([q for q, _ in qa], adapter=adapter, progress=progress, **kwargs)
        return accuracy(answers, qa), answers
