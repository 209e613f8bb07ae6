"""What benchmarks record about the machine, and the CPU facts serving choices depend on."""

from __future__ import annotations

import json

from langchain_ragtune import hardware
from langchain_ragtune.eval.report import render_markdown


def test_vector_isa_names_the_widest_set() -> None:
    assert hardware.vector_isa({"fma", "avx2", "avx512f", "avx512bw"}) == "avx512"
    assert hardware.vector_isa({"fma", "f16c", "avx2"}) == "avx2"
    assert hardware.vector_isa({"sse4_2"}) is None
    assert hardware.vector_isa(set()) is None


def test_vector_isa_reads_this_cpu_by_default(monkeypatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "fma"})
    assert hardware.vector_isa() == "avx2"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: None)  # not Linux: unknown
    assert hardware.vector_isa() is None


def test_native_bf16_needs_the_bf16_instructions(monkeypatch) -> None:
    assert hardware.native_bf16({"avx512f", "avx512_bf16"})
    assert hardware.native_bf16({"avx512f", "amx_bf16"})
    assert not hardware.native_bf16({"avx512f", "avx512bw"})  # AVX-512 alone emulates it
    monkeypatch.setattr(hardware, "cpu_flags", lambda: None)
    assert not hardware.native_bf16()


def test_machine_info_is_json_and_names_cores_and_isa(monkeypatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})
    info = hardware.machine_info()
    assert info["vector_isa"] == "avx2" and info["native_bf16"] is False
    assert isinstance(info["cores"], int) and info["cores"] >= 1
    assert info["cpu"] and info["python"].count(".") == 2
    assert json.loads(json.dumps(info)) == info


def test_the_eval_report_shows_the_vector_isa() -> None:
    meta = {"machine": {"cpu": "AMD EPYC", "cores": 2, "vector_isa": "avx2",
                        "memory_gib": 23.5, "platform": "Linux"}}
    text = render_markdown([{"metadata": meta, "modes": {}}])
    assert "- machine: AMD EPYC, 2 cores (avx2), 23.5 GiB, Linux" in text
