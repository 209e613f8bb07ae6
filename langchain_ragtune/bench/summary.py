"""The Markdown table ``ragtune bench all`` writes: one row per headline number, with targets.

Example:
    >>> print(summary_table({"benches": {"swap": {"error": "vLLM did not start"}}}))
    | bench | metric | value | target | met |
    |---|---|---|---|---|
    | swap | error | vLLM did not start |  | – |
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["summary_rows", "summary_table"]

def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def _num(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def _ok(cond: bool | None) -> str:
    return "–" if cond is None else ("yes" if cond else "**no**")


def _generic_rows(name: str, result: Mapping[str, Any]) -> list[list[str]]:
    items = []
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            items.append((key, value))
        elif isinstance(value, Mapping):
            items += [(f"{key}.{k}", v) for k, v in value.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)]
    # A bench's own "targets" ({metric: upper bound}, e.g. swap's swap_s <= 0.5) fill the
    # target and met columns; the targets themselves are not metrics.
    targets = {k: v for k, v in (result.get("targets") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    items = [(k, v) for k, v in items
             if k != "bench_seconds" and not k.startswith("targets.")][:6]
    rows = [[name, k, _num(v), f"<= {_num(targets[k])}" if k in targets else "",
             _ok(v <= targets[k]) if k in targets else "–"] for k, v in items]
    return rows or [[name, "(no numbers)", "", "", "–"]]


def summary_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """Rows ``[bench, metric, value, target, met]`` for :func:`summary_table`."""
    rows: list[list[str]] = []
    for name, r in (results.get("benches") or {}).items():
        if "skipped" in r or "error" in r:
            rows.append([name, "skipped" if "skipped" in r else "error",
                         str(r.get("skipped") or r.get("error"))[:120], "", "–"])
            continue
        if name == "retrieval":
            rec = _get(r, "ours", "recall_at_10")
            ratio = _get(r, "p95_ratio_ours_over_raw")
            rows += [
                [name, "recall@10 (ours / raw)",
                 f"{_num(rec)} / {_num(_get(r, 'raw', 'recall_at_10'))}", ">= 0.95",
                 _ok(None if rec is None else rec >= 0.95)],
                [name, "p95 ms (ours / raw)",
                 f"{_num(_get(r, 'ours', 'p95_ms'))} / {_num(_get(r, 'raw', 'p95_ms'))}",
                 "ours <= 1.2 x raw", _ok(None if ratio is None else ratio <= 1.2)],
                [name, "ingest rows/s", _num(_get(r, "ingest_rows_per_s")), "", "–"],
            ]
        elif name == "ingest":
            p95 = _get(r, "ack_ms", "p95")
            rows += [
                [name, "write ack p95 ms (per turn)", _num(p95), "<= 10",
                 _ok(None if p95 is None else p95 <= 10)],
                [name, "write ack p95 ms, embedder busy",
                 _num(_get(r, "ack_ms_background_embedding", "p95")), "", "–"],
                [name, "turns/s written + embedded", _num(_get(r, "ingest_rows_per_s")), "", "–"],
                [name, "turns/s embedded", _num(_get(r, "embed_rows_per_s")), "", "–"],
            ]
        elif name == "lora_ops":
            for case, c in (r.get("cases") or {}).items():
                rows.append([name, f"{case}: shrink / expand us (vLLM -> ragtune)",
                             f"{_num(_get(c, 'shrink_us', 'vllm'))} -> "
                             f"{_num(_get(c, 'shrink_us', 'ragtune'))} / "
                             f"{_num(_get(c, 'expand_us', 'vllm'))} -> "
                             f"{_num(_get(c, 'expand_us', 'ragtune'))}", "", "–"])
                if _get(c, "layer_us", "vllm") is not None:
                    layer = (f"{_num(_get(c, 'layer_us', 'vllm'))} -> "
                             f"{_num(_get(c, 'layer_us', 'ragtune'))}")
                    rows.append([name, f"{case}: LoRA per decoder layer us (vLLM -> ragtune)",
                                 layer, "", "–"])
        elif name == "canary_margin":
            o = r.get("overall") or {}
            at_default = _get(o, "by_threshold", "1.0", "answered_otherwise")
            rows += [
                [name, "lead served minus in process, abs. nats (median / p99 / max)",
                 f"{_num(_get(o, 'abs_diff', 'median'))} / {_num(_get(o, 'abs_diff', 'p99'))} / "
                 f"{_num(_get(o, 'abs_diff', 'max'))}", "", "–"],
                [name, "flipped tokens / tokens (largest in-process lead flipped)",
                 f"{_num(o.get('flips'))} / {_num(o.get('tokens'))} "
                 f"({_num(o.get('max_lead_at_flip'))})", "", "–"],
                [name, "answers >= 1 nat lead / of them answered otherwise",
                 f"{_num(_get(o, 'by_threshold', '1.0', 'answers'))} / {_num(at_default)}",
                 "0 otherwise", _ok(None if at_default is None else at_default == 0)],
            ]
        elif name == "tenants":
            cold = _get(r, "cold_first_token_ms", "p95")
            warm = _get(r, "warm_first_token_ms", "p95")
            rows += [
                [name, "failed / wrong answers",
                 f"{_num(r.get('failed'))} / {_num(r.get('wrong_answers'))}", "0 / 0",
                 _ok(None if r.get("failed") is None
                     else r.get("failed") == 0 and r.get("wrong_answers") == 0)],
                [name, "first token p95 ms (cold / warm)", f"{_num(cold)} / {_num(warm)}",
                 "cold <= 2 x warm + 300",
                 _ok(None if cold is None or warm is None else cold <= 2 * warm + 300)],
                [name, "adapter loads/s, namespaces",
                 f"{_num(r.get('loads_per_s'))}, {_num(r.get('namespaces'))}", "", "–"],
            ]
        else:
            rows += _generic_rows(name, r)
    return rows


def summary_table(results: Mapping[str, Any]) -> str:
    """The Markdown summary of :func:`run_all` results.

    Example:
        >>> print(summary_table({"benches": {"swap": {"skipped": "not yet"}}}))
        | bench | metric | value | target | met |
        |---|---|---|---|---|
        | swap | skipped | not yet |  | – |
    """
    lines = ["| bench | metric | value | target | met |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(results)]
    return "\n".join(lines)
