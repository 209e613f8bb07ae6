"""Importing the router (and building its nodes) never imports torch, transformers or vLLM."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "vllm", "peft", "sentence_transformers", "trl")


def _heavy_after(code: str) -> str:
    probe = code + f"\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def test_import_router_is_light():
    assert _heavy_after("import langchain_ragtune.router") == ""


def test_router_decision_does_not_even_import_langgraph():
    code = ("import sys, langchain_ragtune.router as r\n"
            "r.decide('hi', r.NamespaceState(namespace=('u',)))\n"
            "assert 'langgraph' not in sys.modules, 'langgraph imported'")
    assert _heavy_after(code) == ""


def test_building_the_nodes_and_graph_is_light():
    code = ("from langchain_ragtune.router import create_memory_graph, create_memory_node\n"
            "create_memory_node(lambda: None)\n"
            "create_memory_graph(lambda: None)\n"
            "from langchain_ragtune.router import learned, memory, nodes\n"
            "from langchain_ragtune.cli import router\n"
            "from langchain_ragtune.bench import router")
    assert _heavy_after(code) == ""


def test_public_factories_are_light():
    code = ("import langchain_ragtune as l\n"
            "l.create_memory_graph, l.create_memory_node, l.create_remember_node, l.decide")
    assert _heavy_after(code) == ""
