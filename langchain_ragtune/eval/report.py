"""Reports from evaluation results: a Markdown page and PNG plots (matplotlib, Agg backend).

Input is one or more results JSON objects of ``ragtune eval`` (several runs, e.g. window
sizes or modes, are compared side by side). Output, in a folder:

* ``report.md``: settings, machine, per-category tables, latency, exclusions, router mix;
* ``f1_by_category.png``: answer F1 by category and mode (modes that answer);
* ``recall_by_category.png``: evidence recall@k by category and mode (modes that retrieve);
* ``quality_vs_latency.png``: overall quality against p50 latency, one point per mode;
* ``route_mix.png``: the routes a router chose (routed runs).

Example:
    >>> from langchain_ragtune.eval.report import write_report        # doctest: +SKIP
    >>> write_report([load_results("results/locomo.json")], "results/report")  # doctest: +SKIP
    PosixPath('results/report/report.md')
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from langchain_ragtune.errors import InvalidInputError

__all__ = ["Series", "load_results", "render_markdown", "series_of", "write_report"]

_CATS = ("1", "2", "3", "4", "5")
_CAT_LABEL = {"1": "multi-hop", "2": "temporal", "3": "open-domain", "4": "single-hop",
              "5": "adversarial"}
_LABEL_KEYS = ("k", "window", "search_mode", "embedding_model")


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results JSON written by ``ragtune eval``.

    Raises:
        InvalidInputError: the file is missing, not JSON, or has no ``"modes"``.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(f"results file {str(p)!r} does not exist; write one with "
                                "`ragtune eval locomo --json FILE`.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"results file {str(p)!r} is not JSON ({exc}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("modes"), dict):
        raise InvalidInputError(f"{str(p)!r} is not a `ragtune eval` results file "
                                "(it has no 'modes' object).")
    return data


class Series:
    """One mode of one run, with the label it gets in tables and plots.

    Attributes:
        label: e.g. ``"retrieval"`` or, when runs differ, ``"retrieval (window=1)"``.
        mode: the mode name.
        entry: the mode's summary (``f1``, ``recall_at_k``, ``latency_ms``...).
        metadata: the run's metadata.
        router: the mode's router summary (routed modes only).
    """

    def __init__(self, label: str, mode: str, entry: Mapping[str, Any],
                 metadata: Mapping[str, Any], router: Mapping[str, Any] | None) -> None:
        self.label, self.mode, self.entry = label, mode, entry
        self.metadata, self.router = metadata, router

    def __repr__(self) -> str:
        return f"Series({self.label!r})"


def series_of(results: Sequence[Mapping[str, Any]]) -> list[Series]:
    """Flatten runs into labelled series; labels name only the settings that differ.

    Example:
        >>> runs = [{"modes": {"retrieval": {}}, "metadata": {"k": 10, "window": w}}
        ...         for w in (0, 1)]
        >>> [s.label for s in series_of(runs)]
        ['retrieval (window=0)', 'retrieval (window=1)']
        >>> runs = [{"modes": {"retrieval": {}}, "metadata": {"store": {"keyword_scoring": s}}}
        ...         for s in ("bm25", "ts_rank_cd")]
        >>> [s.label for s in series_of(runs)]
        ['retrieval (keyword_scoring=bm25)', 'retrieval (keyword_scoring=ts_rank_cd)']
    """
    metas = [r.get("metadata") or {} for r in results]
    differing = [key for key in _LABEL_KEYS
                 if len({json.dumps(m.get(key), default=str) for m in metas}) > 1]
    # Store settings too (keyword_scoring, rrf_k...): runs of one command under different
    # RAGTUNE_* variables differ only there.
    stores = [m.get("store") or {} for m in metas]
    store_keys = sorted({k for st in stores for k in st} - {"schema", "home", "pg_uri"})
    differing_store = [key for key in store_keys
                       if len({json.dumps(st.get(key), default=str) for st in stores}) > 1]
    out = []
    for result, meta, store in zip(results, metas, stores, strict=True):
        suffix = ", ".join([f"{key}={meta.get(key)}" for key in differing]
                           + [f"{key}={store.get(key)}" for key in differing_store])
        for mode, entry in result["modes"].items():
            label = f"{mode} ({suffix})" if suffix else mode
            out.append(Series(label, mode, entry, meta, entry.get("router")))
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _metric_table(series: Sequence[Series], key: str) -> list[str]:
    rows = [[s.label, s.entry[key].get("overall"), s.entry[key].get("all"),
             *(s.entry[key].get(c) for c in _CATS)] for s in series if key in s.entry]
    header = ["mode", "overall (1, 2, 4)", "all", *(f"{c} {_CAT_LABEL[c]}" for c in _CATS)]
    return _table(header, rows)


def render_markdown(results: Sequence[Mapping[str, Any]], images: Sequence[str] = ()) -> str:
    """The Markdown report of ``results`` (``images``: PNG file names to embed)."""
    series = series_of(results)
    meta = dict(results[0].get("metadata") or {}) if results else {}
    for key in _LABEL_KEYS:  # settings that differ between runs are in the series labels
        if len({json.dumps((r.get("metadata") or {}).get(key), default=str)
                for r in results}) > 1:
            meta[key] = "varies (see below)"
    machine = meta.get("machine") or {}
    data = meta.get("data") or {}
    lines = ["# LoCoMo evaluation report", ""]
    lines += [
        f"- date: {meta.get('date', '?')}; commit: `{meta.get('commit') or '?'}`"
        + (" with uncommitted changes in the package" if meta.get("commit_dirty") else ""),
        f"- machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"
        + (f" ({machine['vector_isa']})" if machine.get("vector_isa") else "")
        + f", {machine.get('memory_gib', '?')} GiB, {machine.get('platform', '?')}",
        f"- data: `{data.get('path', '?')}` (sha256 `{str(data.get('sha256', '?'))[:16]}…`), "
        f"{len(meta.get('conversations') or [])} conversation(s), "
        f"{meta.get('n_questions', '?')} questions",
        f"- embeddings: {meta.get('embedding_model', '?')}; k={meta.get('k')}; "
        f"window={meta.get('window')}"
        + (f"; search mode: {meta['search_mode']}" if meta.get("search_mode") else "")
        + (f"; command: `{meta['command']}`" if meta.get("command") else ""),
        "- overall = mean over categories 1 (multi-hop), 2 (temporal) and 4 (single-hop); "
        "all = every category; 5 is adversarial (unanswerable).",
        "",
    ]
    if len(results) > 1:
        lines += ["Runs compared: " + "; ".join(s.label for s in series), ""]
    if any("recall_at_k" in s.entry for s in series):
        k = meta.get("k")
        lines += [f"## Evidence recall@{k}", "",
                  "Share of a question's evidence turns among the top-k results (a result "
                  "counts for every turn its context window covers).", ""]
        lines += _metric_table(series, "recall_at_k") + [""]
        excl = [(s.label, s.entry["excluded"]) for s in series if s.entry.get("excluded")]
        if excl:
            label, e = excl[0]
            lines += [f"Excluded from recall: {e['no_evidence']} question(s) without evidence, "
                      f"{e['unmatched_evidence_only']} whose evidence ids match no turn; "
                      f"{e['unmatched_evidence_ids']} unmatched evidence id(s) ignored.", ""]
    if meta.get("reader"):
        tune = meta.get("tune") or {}
        lines[-2:-2] = [f"- reader: {meta['reader']}; answers up to {meta.get('answer_tokens')} "
                        f"tokens; seeds {meta.get('seeds')}"
                        + (f"; training {tune.get('train')}, distillation {tune.get('distill')}"
                           if tune else "")]
    if any("f1" in s.entry for s in series):
        lines += ["## Answer F1 (LoCoMo official scoring)", ""]
        lines += _metric_table(series, "f1") + [""]
        unfit = [(s.label, s.entry["prepare"]["not_fitting"], s.entry["prepare"].get(
            "conversations")) for s in series if (s.entry.get("prepare") or {}).get("not_fitting")]
        for label, n, total in unfit:
            lines += [f"{label}: {n} of {total} conversation(s) did not fit the reader's context "
                      "window; their most recent turns that fit were used.", ""]
        trained = [(s.label, a) for s in series
                   for a in (s.entry.get("prepare") or {}).get("adapters") or []]
        if trained:
            lines += ["Adapters trained for the run (closed-book accuracy on held-out distilled "
                      "questions, base -> adapter):", ""]
            lines += _table(["mode", "adapter", "status", "examples", "closed-book", "train s"],
                            [[label, a.get("adapter"), a.get("status"),
                              sum((a.get("examples") or {}).values()) or None,
                              f"{_fmt(a.get('closed_book_before'))} -> "
                              f"{_fmt(a.get('closed_book_after'))}",
                              _fmt(a.get("train_seconds"), 1)] for label, a in trained]) + [""]
    if any("judge" in s.entry for s in series):
        judge = meta.get("judge") or {}
        lines += ["## LLM judge (CORRECT / WRONG, categories 1-4)", "",
                  f"Judge: {judge.get('model', '?')}, protocol {judge.get('protocol', '?')}; "
                  f"counts {judge.get('counts', {})}.", ""]
        lines += _metric_table(series, "judge") + [""]
    for r in results:
        spread = r.get("seeds")
        if spread and spread.get("modes"):
            lines += [f"## Spread over training seeds {spread['values']}", ""]
            lines += _table(["mode", "F1 overall mean", "std", "min", "max", "per seed"],
                            [[m, e["f1_overall"]["mean"], e["f1_overall"]["std"],
                              e["f1_overall"]["min"], e["f1_overall"]["max"],
                              ", ".join(f"{v:.3f}" for v in e["f1_overall"]["per_seed"])]
                             for m, e in spread["modes"].items() if "f1_overall" in e]) + [""]
            acc = spread.get("router_accuracy_vs_oracle")
            if acc:
                lines += [f"Router accuracy vs oracle over seeds: {acc['mean']:.3f} ± "
                          f"{acc['std']:.3f}.", ""]
        hol = r.get("holistic")
        if hol and hol.get("pairs"):
            lines += ["## Holistic questions, compared pairwise", "",
                      f"{hol.get('questions_per_conversation')} holistic question(s) per "
                      f"conversation, every pair of modes judged by {hol.get('judge')} with the "
                      "two answers in random order; win rate counts a tie as half.", ""]
            lines += _table(["pair (a vs b)", "n", "a wins", "b wins", "ties", "unparsed",
                             "a win rate"],
                            [[pair, row.get("n"), row.get("wins_a"), row.get("wins_b"),
                              row.get("ties"), row.get("unparsed"), row.get("win_rate_a")]
                             for pair, row in hol["pairs"].items()]) + [""]
    lines += ["## Latency and memory", ""]
    lines += _table(
        ["mode", "p50 ms", "p95 ms", "memory tokens (mean)", "questions", "prepare s"],
        [[s.label, _fmt((s.entry.get("latency_ms") or {}).get("p50"), 1),
          _fmt((s.entry.get("latency_ms") or {}).get("p95"), 1),
          _fmt((s.entry.get("memory_tokens") or {}).get("mean"), 0), s.entry.get("n_questions"),
          _fmt((s.entry.get("prepare") or {}).get("seconds"), 1)] for s in series]) + [""]
    by_conv = [s for s in series if s.entry.get("recall_by_conversation")]
    if by_conv:
        convs = list(dict.fromkeys(c for s in by_conv for c in s.entry["recall_by_conversation"]))
        lines += ["## Recall (overall) by conversation", ""]
        lines += _table(["mode", *convs],
                        [[s.label, *(s.entry["recall_by_conversation"].get(c) for c in convs)]
                         for s in by_conv]) + [""]
    routers = [(s.label, s.router) for s in series if s.router]
    if routers:
        lines += ["## Router", ""]
        for label, router in dict((lbl, r) for lbl, r in routers).items():
            mix = ", ".join(f"{k} {v:.0%}" for k, v in router.get("mix", {}).items())
            lines.append(f"- {label}: mix {mix}; accuracy vs oracle "
                         f"{_fmt(router.get('accuracy_vs_oracle'))}")
        lines.append("")
    if images:
        lines += ["## Plots", ""] + [f"![{Path(i).stem}]({i})" for i in images] + [""]
    return "\n".join(lines)


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        from langchain_ragtune.errors import DependencyMissingError

        raise DependencyMissingError("matplotlib", "eval", "Plotting reports") from None
    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _bars(plt: Any, series: Sequence[Series], key: str, ylabel: str, path: Path) -> bool:
    rows = [s for s in series if key in s.entry]
    if not rows:
        return False
    groups = ["overall", *(c for c in _CATS if any(s.entry[key].get(c) is not None
                                                     for s in rows))]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups) + 1), 4))
    for i, s in enumerate(rows):
        xs = [g + (i - (len(rows) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [s.entry[key].get(g) or 0.0 for g in groups], width, label=s.label)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(["overall\n(1,2,4)" if g == "overall" else f"{g}\n{_CAT_LABEL[g]}"
                        for g in groups])
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    # Below the axes: inside, several long labels hid the bars they name.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18),
              ncol=2 if len(rows) > 3 else 1, frameon=False)
    fig.set_figheight(4 + 0.22 * ((len(rows) + 1) // 2 if len(rows) > 3 else len(rows)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _quality_latency(plt: Any, series: Sequence[Series], path: Path) -> bool:
    points = []
    for s in series:
        quality = (s.entry.get("f1") or s.entry.get("recall_at_k") or {}).get("overall")
        lat = (s.entry.get("latency_ms") or {}).get("p50")
        if quality is not None and lat is not None:
            points.append((s.label + (" (F1)" if "f1" in s.entry else " (recall)"), lat,
                           (s.entry.get("latency_ms") or {}).get("p95"), quality))
    if not points:
        return False
    # Named in a legend below the axes, not next to the dots: close runs (a sweep over one
    # setting) put their text labels on top of each other.
    fig, ax = plt.subplots(figsize=(7, 4 + 0.2 * len(points)))
    markers = "osD^vP*X"
    for i, (label, p50, p95, quality) in enumerate(points):
        dot = ax.scatter([p50], [quality], s=40, marker=markers[i // 10 % len(markers)],
                         label=label)
        if p95 is not None:
            ax.plot([p50, p95], [quality, quality], alpha=0.4, color=dot.get_facecolor()[0])
    ax.set_xscale("log")
    ax.set_xlabel("latency per question, ms (dot p50, line to p95; log scale)")
    ax.set_ylabel("quality, overall (1,2,4)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _route_mix(plt: Any, series: Sequence[Series], path: Path) -> bool:
    routers = {s.label: s.router for s in series if s.router and s.router.get("mix")}
    if not routers:
        return False
    routes = sorted({r for router in routers.values() for r in router["mix"]})
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.5 * len(routers)))
    labels = list(routers)
    left = [0.0] * len(labels)
    for route in routes:
        shares = [routers[lbl]["mix"].get(route, 0.0) for lbl in labels]
        ax.barh(labels, shares, left=left, label=route)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of questions")
    # Beside the bars, not on them.
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(results: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.md`` and the PNG plots for ``results`` into ``out_dir``.

    Returns:
        The path of ``report.md``.

    Raises:
        InvalidInputError: ``results`` is empty.
    """
    if not results:
        raise InvalidInputError("no results to report; pass at least one results JSON.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series = series_of(results)
    plt = _plt()
    images = []
    k = (results[0].get("metadata") or {}).get("k")
    if _bars(plt, series, "f1", "F1 (official)", out / "f1_by_category.png"):
        images.append("f1_by_category.png")
    if _bars(plt, series, "judge", "LLM judge accuracy", out / "judge_by_category.png"):
        images.append("judge_by_category.png")
    if _bars(plt, series, "recall_at_k", f"evidence recall@{k}", out / "recall_by_category.png"):
        images.append("recall_by_category.png")
    if _quality_latency(plt, series, out / "quality_vs_latency.png"):
        images.append("quality_vs_latency.png")
    if _route_mix(plt, series, out / "route_mix.png"):
        images.append("route_mix.png")
    path = out / "report.md"
    path.write_text(render_markdown(results, images), encoding="utf-8")
    return path
