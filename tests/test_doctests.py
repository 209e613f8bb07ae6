"""The examples in the package's docstrings run and give what they show.

They are documentation first; running them here keeps them true as the code changes.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import langchain_ragtune

MODULES = sorted(m.name for m in pkgutil.walk_packages(langchain_ragtune.__path__,
                                                       "langchain_ragtune."))


def test_every_module_is_found():
    assert {"langchain_ragtune.eval.report", "langchain_ragtune.store.sql"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             report=True)
    assert result.failed == 0, (f"{result.failed} of {result.attempted} docstring examples in "
                                f"{name} failed (printed above)")
