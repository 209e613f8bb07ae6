"""The teacher: a LangChain chat model that enriches the extractive data, never trusted blindly.

RAG-Tuned-LLM writes its training answers with a teacher that sees a chunk as retrieved
context. Here the teacher is any LangChain chat model (an ``init_chat_model`` string such as
``"openai:gpt-4o-mini"``, or a model object); the default, ``"local"``, is the base model
itself run in-process with transformers (SmolLM2-135M: weak, often off-format). So:

* every call has a timeout, and errors or timeouts are counted and skipped;
* replies are parsed leniently (code fences, single quotes, trailing commas, cut-off JSON,
  ``Q:/A:`` lines), retried once when nothing parses, then skipped and counted;
* whatever parses still has to pass the grounding filter before it becomes training data.

A bad teacher therefore costs examples, never the job.

Example:
    >>> parse_qa_pairs("```json\\n[{'question': 'Who?', 'answer': 'Ann',}]\\n```")
    [('Who?', 'Ann')]
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from langchain_ragtune.errors import ConfigError, DependencyMissingError

__all__ = [
    "QA_PROMPT",
    "SUMMARY_PROMPT",
    "LocalChatModel",
    "Teacher",
    "parse_json_loose",
    "parse_qa_pairs",
    "resolve_teacher",
]

log = logging.getLogger(__name__)

QA_SYSTEM = "You turn retrieved memory into question-answer pairs. Reply with JSON only."
QA_PROMPT = """Retrieved context:
{context}

Write {n} questions that this context answers (facts, events, plans, dates, people).
Answer each one from the context only, in one short sentence.
Reply with a JSON list: [{{"question": "...", "answer": "..."}}]"""
SUMMARY_SYSTEM = "You summarise conversations faithfully. Keep names and dates."
SUMMARY_PROMPT = """Conversation:
{context}

Summarise it in two or three sentences."""


# -- lenient parsing ------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.S)


def _repairs(text: str) -> list[str]:
    """Progressively repaired variants of a JSON-ish string."""
    out = [text]
    t = re.sub(r",\s*([}\]])", r"\1", text)  # trailing commas
    out.append(t)
    if "'" in t and '"' not in t:
        t = t.replace("'", '"')
    else:  # quote only single-quoted keys/values that sit next to JSON punctuation
        t = re.sub(r"(?<=[\[{,:]\s)'|(?<=[\[{,:])'|'(?=\s*[:,}\]])", '"', t)
    out.append(t)
    t = re.sub(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)(\s*:)", r'\1"\2"\3', t)  # bare keys
    t = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", t)))
    out.append(t)
    return out


def _close(text: str) -> str:
    """Close brackets and a string left open by a cut-off reply."""
    stack = []
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}" and stack:
            stack.pop()
    tail = '"' if in_str else ""
    body = (text + tail).rstrip().rstrip(",")
    # drop a dangling key without a value ("..., "answer":") before closing
    body = re.sub(r',?\s*"[^"]*"\s*:\s*$', "", body)
    return body + "".join(reversed(stack))


def parse_json_loose(text: str) -> Any | None:
    """Parse the first JSON value in a model reply, repairing common damage; None if hopeless.

    Handles code fences, prose before/after, single quotes, trailing commas, bare keys,
    Python literals and replies cut off mid-value.

    Example:
        >>> parse_json_loose('Sure! {"a": [1, 2,]} Hope that helps')
        {'a': [1, 2]}
        >>> parse_json_loose('[{"q": "x", "a": "y"}, {"q": "z"') [0]
        {'q': 'x', 'a': 'y'}
    """
    if not isinstance(text, str) or not text.strip():
        return None
    fenced = _FENCE.findall(text)
    candidates = [f for f in fenced if f.strip()] + [text]
    decoder = json.JSONDecoder()
    for cand in candidates:
        starts = [i for i in (cand.find("["), cand.find("{")) if i >= 0]
        if not starts:
            continue
        body = cand[min(starts):]
        for variant in _repairs(body):
            cut = variant[: variant.rfind("}") + 1] if "}" in variant else variant
            for attempt in (variant, _close(variant), _close(cut)):
                try:
                    value, _ = decoder.raw_decode(attempt)
                    return value
                except ValueError:
                    continue
    return None


_QA_LINES = re.compile(r"(?:^|\n)\s*(?:\d+[.)]\s*)?(?:Q|Question)\s*\d*\s*[:.-]\s*([^\n]+?)\s*\n\s*"
                       r"(?:A|Answer)\s*\d*\s*[:.-]\s*(.+?)(?=\n\s*(?:\d+[.)]\s*)?(?:Q|Question)\b|\Z)",
                       re.S | re.I)


def _pair(item: Any) -> tuple[str, str] | None:
    if isinstance(item, dict):
        low = {str(k).lower().strip(): v for k, v in item.items()}
        q = next((low[k] for k in ("question", "q", "query") if k in low), None)
        a = next((low[k] for k in ("answer", "a", "response") if k in low), None)
        if isinstance(q, str) and isinstance(a, (str, int, float)) and q.strip() and str(a).strip():
            return q.strip(), str(a).strip()
    elif isinstance(item, (list, tuple)) and len(item) == 2 \
            and all(isinstance(x, str) for x in item):
        return item[0].strip(), item[1].strip()
    return None


def parse_qa_pairs(text: str) -> list[tuple[str, str]]:
    """Question/answer pairs from a teacher reply (JSON list/object, or ``Q:``/``A:`` lines).

    Example:
        >>> parse_qa_pairs("Q: Where is Ann?\\nA: In Lisbon.\\nQ: When?\\nA: In May.")
        [('Where is Ann?', 'In Lisbon.'), ('When?', 'In May.')]
        >>> parse_qa_pairs("I cannot help with that.")
        []
    """
    data = parse_json_loose(text)
    items: list[Any] = []
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict):
        inner = next((v for k, v in data.items() if isinstance(v, list)), None)
        items = inner if inner is not None else [data]
    pairs = [p for p in (_pair(i) for i in items) if p]
    if pairs:
        return pairs
    return [(q.strip(), a.strip()) for q, a in _QA_LINES.findall(text or "")
            if q.strip() and a.strip()]


# -- the teacher ----------------------------------------------------------------------------

class Teacher:
    """A chat model used defensively: timeouts, retries, lenient parsing, and counts.

    Args:
        model: a LangChain chat model (anything with ``invoke(messages)``).
        timeout_s: seconds to wait for one reply; a slower call is abandoned and counted.
        retries: extra attempts when a reply cannot be parsed or the call fails.

    Attributes:
        stats: counters ``calls``, ``ok``, ``timeouts``, ``errors``, ``unparsable``,
            ``retries``, ``pairs``.

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> good = '[{"question": "Q?", "answer": "A"}]'
        >>> t = Teacher(FakeListChatModel(responses=["junk", good]))
        >>> t.qa_pairs("Ann: I moved to Lisbon.", n=1)
        [('Q?', 'A')]
        >>> t.stats["unparsable"], t.stats["retries"]
        (1, 1)
    """

    def __init__(self, model: Any, *, timeout_s: float = 120.0, retries: int = 1) -> None:
        self.model = model
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.stats: Counter = Counter()

    @property
    def name(self) -> str:
        return getattr(self.model, "model_name", None) or getattr(self.model, "model", None) \
            or type(self.model).__name__

    def complete(self, system: str, user: str) -> str | None:
        """One reply as text, or None after a timeout or an error (both counted)."""
        from langchain_core.messages import HumanMessage, SystemMessage

        self.stats["calls"] += 1
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["reply"] = self.model.invoke([SystemMessage(system), HumanMessage(user)])
            except Exception as exc:  # a teacher failure is data loss, not a crash
                box["error"] = exc

        # A daemon thread, not an executor: a stuck call must not block the next one or
        # keep the process alive at exit.
        worker = threading.Thread(target=call, name="ragtune-teacher", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():
            self.stats["timeouts"] += 1
            log.warning("teacher %s timed out after %.0f s; skipped", self.name, self.timeout_s)
            return None
        if "error" in box:
            self.stats["errors"] += 1
            log.warning("teacher %s failed: %s; skipped", self.name, box["error"])
            return None
        content = getattr(box.get("reply"), "content", box.get("reply"))
        if isinstance(content, list):  # content blocks
            content = "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
        self.stats["ok"] += 1
        return content if isinstance(content, str) else None

    def qa_pairs(self, context: str, *, n: int = 3) -> list[tuple[str, str]]:
        """Question/answer pairs about ``context``; [] when the teacher gives nothing usable."""
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            reply = self.complete(QA_SYSTEM, QA_PROMPT.format(context=context, n=n))
            if reply is None:
                continue
            pairs = parse_qa_pairs(reply)
            if pairs:
                self.stats["pairs"] += len(pairs)
                return pairs[: max(n, 1) * 2]
            self.stats["unparsable"] += 1
        return []

    def summary(self, context: str) -> str | None:
        """A short summary of ``context``, or None."""
        reply = self.complete(SUMMARY_SYSTEM, SUMMARY_PROMPT.format(context=context))
        return reply.strip() if reply and reply.strip() else None


# -- the default local teacher ---------------------------------------------------------------

def _chat_model_base() -> Any:
    from langchain_core.language_models import BaseChatModel

    return BaseChatModel


class LocalChatModel(_chat_model_base()):  # type: ignore[misc]
    """A LangChain chat model running a Hugging Face model folder in this process.

    Greedy decoding with a repetition penalty (small models loop otherwise), a bounded
    number of new tokens, torch threads set explicitly. The model loads on first use.

    Args:
        model_path: a Hugging Face causal-LM folder with a chat template.
        max_new_tokens: the longest reply.
        torch_threads: threads torch may use.

    Example:
        >>> llm = LocalChatModel(model_path="/models/SmolLM2-135M-Instruct")  # doctest: +SKIP
        >>> llm.invoke("What is the capital of France?").content             # doctest: +SKIP
        'The capital of France is Paris.'
    """

    model_path: str
    max_new_tokens: int = 256
    repetition_penalty: float = 1.15
    torch_threads: int = 2

    @property
    def _llm_type(self) -> str:
        return "ragtune-local"

    @property
    def model_name(self) -> str:
        return f"local:{Path(self.model_path).name}"

    def _load(self) -> tuple[Any, Any]:
        cache = self.__dict__.get("_loaded")
        if cache is None:
            try:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer
            except ImportError as exc:
                raise DependencyMissingError(exc.name or "transformers", "train",
                                             "The local teacher model") from None
            torch.set_num_threads(self.torch_threads)
            tok = AutoTokenizer.from_pretrained(self.model_path)
            model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
            model.eval()
            cache = self.__dict__["_loaded"] = (tok, model, threading.Lock())
        return cache

    def _generate(self, messages: Sequence[Any], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> Any:
        import torch
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, ChatResult

        tok, model, lock = self._load()
        roles = {"human": "user", "ai": "assistant", "system": "system"}
        chat = [{"role": roles.get(m.type, "user"), "content": m.content} for m in messages]
        ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        with lock, torch.no_grad():
            out = model.generate(**ids, max_new_tokens=kwargs.get("max_new_tokens",
                                                                   self.max_new_tokens),
                                 do_sample=False, repetition_penalty=self.repetition_penalty,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def resolve_teacher(spec: Any, *, model_config: Any = None, timeout_s: float = 120.0,
                    retries: int = 1) -> Teacher | None:
    """Turn a teacher setting into a :class:`Teacher` (or None for the extractive-only path).

    Args:
        spec: ``None``/``"none"`` (no teacher), ``"local"`` (the base model in-process), an
            ``init_chat_model`` string such as ``"openai:gpt-4o-mini"``, a chat model object,
            or a ready :class:`Teacher`.
        model_config: :class:`~langchain_ragtune.config.ModelConfig` for ``"local"``.

    Raises:
        ConfigError: an unknown spec.
        DependencyMissingError: a provider string needs a package that is missing.
    """
    if spec is None or spec is False or (isinstance(spec, str) and spec.strip().lower()
                                         in ("", "none", "off", "extractive")):
        return None
    if isinstance(spec, Teacher):
        return spec
    if isinstance(spec, str):
        name = spec.strip()
        if name.lower() in ("local", "base"):
            from langchain_ragtune.config import ModelConfig
            from langchain_ragtune.models import resolve_base_model

            cfg = model_config or ModelConfig.from_env()
            model: Any = LocalChatModel(model_path=str(resolve_base_model(cfg)),
                                        torch_threads=cfg.torch_threads)
        else:
            model = _init_chat_model(name)
    elif hasattr(spec, "invoke"):
        model = spec
    else:
        raise ConfigError(f"teacher={spec!r} is not a chat model: use 'local', 'none', a "
                          "provider string such as 'openai:gpt-4o-mini', or a LangChain chat "
                          "model.")
    return Teacher(model, timeout_s=timeout_s, retries=retries)


def _init_chat_model(name: str) -> Any:
    try:
        from langchain.chat_models import init_chat_model  # the `langchain` package
    except ImportError:
        init_chat_model = None
    if init_chat_model is not None:
        return init_chat_model(name)
    provider, _, model = name.partition(":")
    if provider == "openai" and model:
        try:
            from langchain_openai import ChatOpenAI
        except ImportError:
            raise DependencyMissingError("langchain-openai", "serve",
                                         f"The teacher {name!r}") from None
        return ChatOpenAI(model=model, temperature=0)
    raise DependencyMissingError("langchain", "train",
                                 f"The teacher {name!r} (init_chat_model strings)")
