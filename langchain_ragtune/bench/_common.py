"""What the benchmarks share: the date stamp and percentiles every JSON result carries, and
the end of a run (its JSON written, its throwaway schema and folder removed)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from langchain_ragtune.eval.metrics import percentile

__all__ = ["discard", "finish", "now_iso", "pct"]


def now_iso() -> str:
    """The time of a result, in UTC to the second (results from many machines are compared)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def pct(values: Iterable[float], q: float, digits: int = 3) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, rounded; ``None`` for no values.

    Example:
        >>> pct([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    value = percentile(values, q)
    return None if value is None else round(value, digits)


def finish(out: dict, started: float, json_out: str | None) -> dict:
    """Stamp a benchmark's total seconds, write its JSON to ``json_out`` (if given), return it."""
    import json
    import time
    from pathlib import Path

    out["seconds"] = round(time.monotonic() - started, 1)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(out, indent=2, ensure_ascii=False, default=str))
    return out


def discard(store: Any, home: Any = None) -> None:
    """Drop a benchmark's throwaway schema, close its store and remove its home folder."""
    import shutil

    try:
        store.drop_schema()
    finally:
        store.close()
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)
