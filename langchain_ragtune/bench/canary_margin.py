"""``ragtune bench canary_margin``: how far the served model's greedy leads are from the
in-process evaluation's, which sets ``GateConfig.canary_min_margin``.

Example:
    >>> from langchain_ragtune.bench.canary_margin import lead_stats
    >>> lead_stats([([2.0], [1.9])])["flips"]
    0
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from langchain_ragtune.bench._common import now_iso
from langchain_ragtune.hardware import machine_info
from langchain_ragtune.testing.adapters import FACT_VERSIONS, ensure_fact_adapter

__all__ = ["MARGIN_THRESHOLDS", "lead_stats", "run_canary_margin_bench"]

#: Thresholds reported by :func:`lead_stats` (``GateConfig.canary_min_margin`` candidates).
MARGIN_THRESHOLDS = (0.0, 0.25, 0.5, 1.0, 2.0)


def lead_stats(pairs: list[tuple[list[float], list[float]]]) -> dict[str, Any]:
    """Compare per-token greedy leads of the same answers, in-process vs served.

    ``pairs`` holds, per answer, the in-process (float32) leads and the served leads of
    its tokens (the in-process greedy answer, teacher-forced on both sides). A flip is a
    token the in-process model picks (lead >= 0) that the served model would not (< 0).
    ``by_threshold[t]``: answers whose smallest in-process lead is at least ``t`` (what
    ``canary_min_margin=t`` would publish) and how many of them the server answers otherwise.

    Example:
        >>> out = lead_stats([([2.0, 0.1], [2.2, -0.1]), ([1.5], [1.4])])
        >>> out["tokens"], out["flips"], out["max_lead_at_flip"]
        (3, 1, 0.1)
        >>> out["by_threshold"]["1.0"]
        {'answers': 1, 'answered_otherwise': 0}
    """
    import statistics

    diffs = sorted(abs(a - b) for ours, served in pairs for a, b in zip(ours, served))
    flips = [a for ours, served in pairs for a, b in zip(ours, served) if a >= 0 > b]
    changed = [any(a >= 0 > b for a, b in zip(ours, served)) for ours, served in pairs]
    mins = [min(ours) if ours else 0.0 for ours, _ in pairs]
    p99 = diffs[min(len(diffs) - 1, int(0.99 * len(diffs)))] if diffs else None
    return {
        "answers": len(pairs), "tokens": len(diffs),
        "abs_diff": {"median": round(statistics.median(diffs), 4) if diffs else None,
                     "p99": round(p99, 4) if p99 is not None else None,
                     "max": round(diffs[-1], 4) if diffs else None},
        "flips": len(flips),
        "max_lead_at_flip": round(max(flips), 4) if flips else None,
        "answers_otherwise": sum(changed),
        "by_threshold": {str(t): {"answers": sum(m >= t for m in mins),
                                  "answered_otherwise": sum(c for m, c in zip(mins, changed)
                                                            if m >= t)}
                         for t in MARGIN_THRESHOLDS},
    }


def _margin_questions(n: int) -> list[str]:
    """The fact adapters' trained questions, then questions in the canaries' form ("What
    did S say about T on D?") on the shipped sample conversation."""
    from langchain_ragtune.datasets.locomo import load_sample
    from langchain_ragtune.distill.extract import topic_phrase
    from langchain_ragtune.distill.text import format_date

    turns = list(load_sample()[0].turns())
    speakers = {t.speaker for t in turns}
    out = [q for f in FACT_VERSIONS["v1"].facts for q in f.questions]
    for t in turns:
        topic = topic_phrase(t.text, exclude=speakers)
        if topic:
            out.append(f"What did {t.speaker} say about {topic} on {format_date(t.occurred_at)}?")
    return out[:n]


def run_canary_margin_bench(*, questions: int = 40, max_tokens: int = 32,
                            adapters: str | None = None, endpoint: str | None = None,
                            cache_dir: str | Path | None = None,
                            quiet: bool = False) -> dict[str, Any]:
    """How far the served model's greedy leads are from the in-process evaluation's.

    The training pipeline publishes a canary only when its float32, in-process answer leads
    the next choice by ``GateConfig.canary_min_margin`` at every token, because vLLM serves
    in another precision (bfloat16 on AVX-512 CPUs and GPUs) and answers near ties otherwise.
    This measures that: each adapter answers ``questions`` bare questions greedily in
    process (as canaries are recorded), and the same answers are scored on vLLM with
    ``prompt_logprobs`` (:meth:`VLLMAdminClient.score_prompts` ``with_leads``), giving
    both leads of every answer token (:func:`lead_stats`).

    Args:
        questions: questions per adapter (the fact adapters' 10 trained ones, then the
            shipped sample's "What did S say about T on D?" questions).
        max_tokens: answer length.
        adapters: comma-separated adapter folders (default: the bench's two fact adapters,
            trained once and cached).
        endpoint: a running vLLM server's URL (default: start one).
        cache_dir: where the fact adapters are cached.
        quiet: no progress output.

    Returns:
        JSON-able dict: ``overall`` and ``adapters`` (:func:`lead_stats` each),
        ``server_dtype``, ``settings``, ``machine``, ``date``.
    """
    from langchain_ragtune.config import ModelConfig, ServeConfig
    from langchain_ragtune.errors import InvalidInputError, ServingError
    from langchain_ragtune.models import prepare_base_model
    from langchain_ragtune.serving.client import VLLMAdminClient
    from langchain_ragtune.serving.launcher import server_dtype, serving_endpoints
    from langchain_ragtune.tuning.evaluate import AdapterEvaluator

    def say(msg: str) -> None:
        if not quiet:
            print(f"bench canary_margin: {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    model_config = ModelConfig.from_env()
    base_model = prepare_base_model(model_config, quiet=True)
    if adapters:
        paths = [Path(p.strip()) for p in adapters.split(",") if p.strip()]
    else:
        cache = Path(cache_dir) if cache_dir else model_config.home / "cache" / "bench-adapters"
        say("fact adapters (trained once, then cached)")
        paths = [ensure_fact_adapter(base_model, cache, v) for v in ("v1", "v2")]
    missing = [str(p) for p in paths if not (p / "adapter_config.json").is_file()]
    if missing or not paths:
        raise InvalidInputError(f"adapters={adapters!r}: no adapter folder at {missing}; pass "
                                "comma-separated peft adapter folders (--set adapters=A,B).")
    qs = _margin_questions(questions)
    ev = AdapterEvaluator(base_model, max_new_tokens=max_tokens,
                          torch_threads=model_config.torch_threads, repetition_penalty=1.0)
    ours: dict[str, list[tuple[str, str, list[float]]]] = {}
    skipped = 0
    for path in paths:
        say(f"{path.name}: {len(qs)} greedy answers and their leads in process")
        answers = ev.answer(qs, adapter=path, system_prompt=None)
        kept = [(q, a) for q, a in zip(qs, answers) if a]
        skipped += len(qs) - len(kept)  # an empty answer has no tokens to compare
        leads = ev.greedy_leads(kept, adapter=path, system_prompt=None)
        ours[path.name] = [(q, a, lead) for (q, a), lead in zip(kept, leads)]
    del ev  # free the in-process model before vLLM starts

    config = ServeConfig.from_env(**({"vllm_urls": (endpoint,)} if endpoint else {}))
    attached = bool(config.vllm_urls)
    say(f"using {config.vllm_urls}" if attached else "starting vLLM")
    results: dict[str, Any] = {}
    everything: list[tuple[list[float], list[float]]] = []
    with serving_endpoints(config, port=0) as urls, VLLMAdminClient(urls[0]) as client:
        for path in paths:
            name = f"margin-{path.name}-{os.getpid()}"
            client.load_adapter(name, path)
            try:
                probes, pairs = [], []
                for q, a, lead in ours[path.name]:
                    user = [{"role": "user", "content": q}]
                    prompt = client.tokenize_chat(user)
                    full = client.tokenize_chat([*user, {"role": "assistant", "content": a}],
                                                continue_final_message=True)
                    # Compare token for token only where both sides split the answer alike.
                    if full[:len(prompt)] == prompt and len(full) - len(prompt) == len(lead):
                        probes.append(((full, len(prompt)), lead))
                    else:
                        skipped += 1
                if probes:
                    scored = client.score_prompts(name, [p for p, _ in probes], with_leads=True)
                    if any(t.lead is None for sc in scored for t in sc):
                        raise ServingError(f"vLLM at {urls[0]} returned no alternatives with "
                                           "prompt_logprobs=2; it cannot give leads.")
                    pairs = [(lead, [float(t.lead) for t in sc])  # type: ignore[arg-type]
                             for (_, lead), sc in zip(probes, scored)]
                results[path.name] = lead_stats(pairs)
                everything += pairs
                say(f"{path.name}: {results[path.name]['tokens']} tokens, max |diff| "
                    f"{results[path.name]['abs_diff']['max']}, flips {results[path.name]['flips']}")
            finally:
                client.unload_adapter(name)
    return {
        "overall": lead_stats(everything), "adapters": results,
        "server_dtype": "unknown (attached server)" if attached
        else server_dtype(config) or "auto (the model's own)",
        "settings": {"questions": len(qs), "max_tokens": max_tokens,
                     "adapters": [str(p) for p in paths], "skipped_answers": skipped},
        "bench_seconds": round(time.perf_counter() - t_start, 1),
        "machine": machine_info(),
        "date": now_iso(),
    }
