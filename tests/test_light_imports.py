"""Heavy dependencies stay off the hot import path."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "vllm", "peft", "sentence_transformers", "trl")


@pytest.mark.parametrize("module", [
    "langchain_ragtune",
    "langchain_ragtune.store",
    "langchain_ragtune.store.langgraph",
    "langchain_ragtune.config",
    "langchain_ragtune.cli",
])
def test_import_does_not_pull_heavy_dependencies(module):
    code = (f"import sys, {module}\n"
            f"if '{module}' == 'langchain_ragtune':\n"
            "    langchain_ragtune.MemoryStore, langchain_ragtune.StoreConfig\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {module} imported {out.stdout.strip()}"


def test_cli_builds_without_heavy_imports():
    code = ("import sys\nfrom langchain_ragtune.cli import build_parser\nbuild_parser()\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
