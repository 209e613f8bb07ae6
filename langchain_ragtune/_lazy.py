"""Names a package exports without importing their modules until first use.

Importing ``langchain_ragtune`` or one of its rooms must stay light (no psycopg pool,
LangGraph, torch or vLLM until something is used), yet the public names are spelled as
plain imports. Each package's ``__init__`` lists its lazy names once and gets its module
``__getattr__`` (PEP 562) from :func:`lazy_exports`; the same names are imported under
``TYPE_CHECKING`` and listed in a literal ``__all__`` for type checkers.

Example:
    >>> __getattr__ = lazy_exports("pkg", {"sqrt": "math"})
    >>> __getattr__("sqrt")(9.0)
    3.0
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` on first use.

    Args:
        package: the package's ``__name__``.
        exports: public name -> the module that defines it (absolute).

    The value is cached in the package's namespace, so later lookups cost nothing.
    """
    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace = sys.modules.get(package)
        if namespace is not None:
            setattr(namespace, name, value)
        return value

    return __getattr__
