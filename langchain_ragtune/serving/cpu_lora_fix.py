"""A vLLM general plugin fixing the CPU LoRA "-1 index" bug (vllm-project/vllm#48421).

vLLM marks tokens of requests without an adapter with the LoRA index ``-1``. The GPU
(Triton) kernels skip those tokens; the pure-PyTorch ops that vLLM uses on CPU
(``vllm/lora/ops/torch_ops/lora_ops.py``) gather ``weights[indices]`` instead, and in Python
``-1`` selects the *last* adapter slot. So a base-model request batched together with adapter
requests silently gets the adapter in slot ``max_loras - 1`` applied: no error, a wrong answer.

This module carries the upstream fix until a released vLLM has it: :func:`register` (the
``vllm.general_plugins`` entry point declared in ``pyproject.toml``, which vLLM calls in every
process it starts) replaces ``bgmv_shrink``, ``bgmv_expand`` and ``bgmv_expand_slice`` in the
three modules that hold references to them with versions that clamp the gather index to 0 and
zero the rows of ``-1`` tokens. For valid indices the results are bit-for-bit those of the
originals. The ``sgmv_*`` prefill ops delegate to the module-level ``bgmv_*`` functions, so
they are fixed too.

It changes nothing when vLLM is not installed, when the installed ops already skip ``-1``
(checked by running them on a tiny tensor, not by version number), or when
``RAGTUNE_DISABLE_CPU_LORA_FIX=1`` is set (which tests use to show the bug exists).

Example:
    >>> from langchain_ragtune.serving import cpu_lora_fix
    >>> cpu_lora_fix.apply()                                  # doctest: +SKIP
    'patched: bgmv_shrink, bgmv_expand, bgmv_expand_slice'
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DISABLE_ENV",
    "TARGET_MODULES",
    "apply",
    "bgmv_expand",
    "bgmv_expand_slice",
    "bgmv_shrink",
    "has_index_bug",
    "register",
]

#: Set to 1/true to leave vLLM's ops untouched (to reproduce the bug).
DISABLE_ENV = "RAGTUNE_DISABLE_CPU_LORA_FIX"
#: Modules holding their own reference to the ops (``from ... import bgmv_shrink``).
TARGET_MODULES = (
    "vllm.lora.ops.torch_ops.lora_ops",
    "vllm.lora.ops.torch_ops",
    "vllm.lora.punica_wrapper.punica_cpu",
)
_OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
_FIXED_MARK = "__ragtune_cpu_lora_fix__"


def _logger() -> logging.Logger:
    # Under the "vllm." hierarchy the lines land in vLLM's own log handler (and so in the
    # server's log file) next to the plugin-loading messages.
    return logging.getLogger("vllm.plugins.ragtune_cpu_lora_fix")


# --- the fixed ops -------------------------------------------------------------------------


def _select(weights: torch.Tensor, indices: torch.Tensor,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather each token's adapter weights; also return which tokens have an adapter.

    No data-dependent branch: vLLM may trace these ops with torch.compile.
    """
    has_lora = indices >= 0
    selected = weights[indices.clamp(min=0)].to(dtype=dtype)
    if selected.dim() == 4:
        selected = selected.squeeze(dim=1)
    return selected, has_lora


def bgmv_shrink(inputs: torch.Tensor, lora_b_weights: torch.Tensor,
                output_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                scaling: float = 1.0) -> None:
    """``output[:, :r] = scaling * inputs @ A[idx]^T``, and 0 for tokens with ``idx == -1``."""
    import torch

    selected, has_lora = _select(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    inputs = inputs.to(dtype=output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs, selected)
    outputs = outputs.masked_fill(~has_lora.unsqueeze(-1), 0)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(inputs: torch.Tensor, lora_b_weights: torch.Tensor,
                output_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                add_inputs: bool = True) -> None:
    """``output (+)= inputs @ B[idx]^T``, adding nothing for tokens with ``idx == -1``."""
    import torch

    selected, has_lora = _select(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    inputs = inputs.to(dtype=output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs, selected)
    outputs = outputs.masked_fill(~has_lora.unsqueeze(-1), 0)

    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    # LoRA adapter and model may add different amounts of padding to output.
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_expand_slice(inputs: torch.Tensor, lora_b_weights: torch.Tensor,
                      output_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                      slice_offset: int, slice_size: int, add_inputs: bool = True) -> None:
    """Like :func:`bgmv_expand` into ``output[:, offset:offset + size]``."""
    import torch

    selected, has_lora = _select(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    inputs = inputs.to(dtype=output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs, selected)
    outputs = outputs.masked_fill(~has_lora.unsqueeze(-1), 0)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = outputs[:]


_FIXED: dict[str, Callable[..., None]] = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
}
for _fn in _FIXED.values():
    setattr(_fn, _FIXED_MARK, True)


# --- detection -----------------------------------------------------------------------------


def has_index_bug(name: str, op: Callable[..., Any]) -> bool:
    """Run ``op`` (one of the three ops, by ``name``) on a tiny batch and tell whether a
    token with index -1 receives the last adapter's contribution.

    Two adapter slots, slot 0 all zeros and slot 1 all ones; one token with index -1. A
    correct op leaves that token's output at 0; the buggy one writes the ones-slot product.

    Example:
        >>> from langchain_ragtune.serving.cpu_lora_fix import bgmv_shrink, has_index_bug
        >>> has_index_bug("bgmv_shrink", bgmv_shrink)
        False
    """
    import torch

    weights = torch.zeros(2, 1, 3, 4)
    weights[1] = 1.0
    x = torch.ones(1, 4)
    idx = torch.tensor([-1])
    if name == "bgmv_shrink":
        out = torch.zeros(1, 3)
        op(x, weights, out, idx, 1.0)
    elif name == "bgmv_expand":
        out = torch.zeros(1, 3)
        op(x, weights, out, idx, True)
    elif name == "bgmv_expand_slice":
        out = torch.zeros(1, 5)
        op(x, weights, out, idx, 1, 3, True)
    else:
        raise ValueError(f"unknown op {name!r}: expected one of {', '.join(_OPS)}")
    return bool(out.abs().sum().item() != 0)


# --- the plugin ----------------------------------------------------------------------------


def _disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def apply() -> str:
    """Patch the installed vLLM's CPU LoRA ops if they have the bug; return what was done.

    Idempotent. Returns one of ``"disabled"``, ``"no vllm"``, ``"already fixed"``,
    ``"already patched"`` or ``"patched: <ops>"``; the same line is logged.
    """
    log = _logger()
    if _disabled():
        log.warning("ragtune CPU LoRA fix disabled by %s: base-model requests batched with "
                    "adapter requests may get the last adapter applied", DISABLE_ENV)
        return "disabled"
    try:
        modules = [importlib.import_module(name) for name in TARGET_MODULES]
    except ImportError as exc:
        log.debug("vLLM LoRA torch ops not importable (%s): nothing to fix", exc)
        return "no vllm"
    source = modules[0]
    to_patch: list[str] = []
    for name in _OPS:
        current = getattr(source, name, None)
        if current is None:  # a vLLM without this op: its layout changed, nothing to do
            continue
        if getattr(current, _FIXED_MARK, False):
            continue
        if has_index_bug(name, current):
            to_patch.append(name)
    if not to_patch:
        already = all(getattr(getattr(m, n, None), _FIXED_MARK, False)
                      for m in modules for n in _OPS if hasattr(m, n))
        status = "already patched" if already else "already fixed"
        log.info("ragtune CPU LoRA fix: %s, nothing to do", status)
        return status
    for module in modules:
        for name in to_patch:
            if hasattr(module, name):
                setattr(module, name, _FIXED[name])
    status = "patched: " + ", ".join(to_patch)
    log.info("ragtune CPU LoRA fix (vllm-project/vllm#48421) %s in %s", status,
             ", ".join(TARGET_MODULES))
    return status


def register() -> None:
    """The ``vllm.general_plugins`` entry point: apply the fix in this vLLM process.

    Never raises: a failure is logged as an error (vLLM keeps starting, with the bug).
    """
    try:
        apply()
    except Exception:  # noqa: BLE001 - a plugin must not take the server down
        _logger().exception("ragtune CPU LoRA fix failed to apply")
