"""A vLLM general plugin fixing two CPU LoRA bugs: the "-1 index" (vllm-project/vllm#48421)
and ``prompt_logprobs`` on an adapter killing the engine.

vLLM marks tokens of requests without an adapter with the LoRA index ``-1``. The GPU
(Triton) kernels skip those tokens; the pure-PyTorch ops that vLLM uses on CPU
(``vllm/lora/ops/torch_ops/lora_ops.py``) gather ``weights[indices]`` instead, and in Python
``-1`` selects the *last* adapter slot. So a base-model request batched together with adapter
requests silently gets the adapter in slot ``max_loras - 1`` applied: no error, a wrong answer.

This module carries the upstream fix until a released vLLM has it: :func:`register` (the
``vllm.general_plugins`` entry point declared in ``pyproject.toml``, which vLLM calls in every
process it starts) replaces ``bgmv_shrink``, ``bgmv_expand`` and ``bgmv_expand_slice`` in the
three modules that hold references to them with versions that leave ``-1`` tokens alone. For
valid indices the results equal the originals' up to float rounding. The ``sgmv_*`` prefill
ops delegate to the module-level ``bgmv_*`` functions, so they are fixed too.

The replacements are also faster. vLLM's ops gather a copy of the adapter weights for every
token (``weights[indices]``, converted to the output dtype) and run a batched ``einsum``; these
group the tokens by adapter and run one dense matmul per adapter present (usually one or two).
Measured per call by ``ragtune bench lora_ops`` on this project's 2-core CPU (SmolLM2-135M
shapes, rank 16, 2026-12-02, docs/benchmarks.md): one decoding token 46.8 -> 22.9 us (shrink)
and 97.6 -> 44.4 us (expand), a 57-token prefill 484 -> 48 and 1241 -> 66 us. A model runs
about 420 of them per step, so this is most of what an adapter costs over the base model on
CPU. Under ``torch.compile`` (not vLLM's CPU default) the
grouping's host sync is avoided: a branch-free gather runs instead.

Two more speed-ups come with the index fix (only where it is applied). vLLM's CPU wrapper
calls those ops once per output slice of every LoRA linear layer, finding the tokens' adapters
anew each time; the plugin finds them once per step and runs each layer as one shrink matmul
over all its slices plus one expand per slice (:func:`add_lora_linear`, checked against
vLLM's own method on tiny tensors before it is installed). And with no adapter targeting
``lm_head`` the LoRA logits delta is zero, so it is not computed (:func:`add_lora_logits`).
``ragtune bench lora_ops`` measures the per-layer cost both ways; served by vLLM with 4
concurrent adapter requests this took an adapter from 51-56 to 93 tokens/s against the base
model's 88-101 (same server, 2026-12-02, docs/benchmarks.md).

The second bug: a request with ``prompt_logprobs`` for an adapter, batched with other
requests, stops the whole server. vLLM computes the prompt positions' logits one request at a
time through the LoRA logits layer, whose CPU wrapper
(``PunicaWrapperCPU.add_lora_logits``) indexes them with the per-*request* sampler mapping:
56 prompt rows against 5 requests is an ``einsum`` shape error in the worker, and vLLM's
engine dies with it (``EngineDeadError``; every later request fails). Alone in its batch
the single index broadcasts, which is why it passes on an idle server. The fix
(:func:`add_lora_logits`) leaves every call whose rows match the mapping to vLLM and, for
the per-request prompt call, adds no LoRA logits delta; that delta is zero unless an adapter
targets ``lm_head`` (vLLM's GPU path drops it there too, vllm-project/vllm#51594), and a
warning says so once if one does. The hidden states of those positions already went through
the adapter with the per-token mapping, so for attention/MLP adapters (all that ragtune
trains) the prompt logprobs are exact. The publisher's scored canaries rely on it.

It changes nothing when vLLM is not installed, when the installed code already has the fixes
(checked by running it on tiny tensors, not by version number), or when
``RAGTUNE_DISABLE_CPU_LORA_FIX=1`` is set (which tests use to show the bugs exist).

Example:
    >>> from langchain_ragtune.serving import cpu_lora_fix
    >>> cpu_lora_fix.apply()                                  # doctest: +SKIP
    'patched: bgmv_shrink, bgmv_expand, bgmv_expand_slice, add_lora_logits, add_lora_linear'
"""

from __future__ import annotations

import importlib
import logging
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DISABLE_ENV",
    "TARGET_MODULES",
    "add_lora_linear",
    "add_lora_logits",
    "apply",
    "bgmv_expand",
    "bgmv_expand_slice",
    "bgmv_shrink",
    "fused_linear_agrees",
    "has_index_bug",
    "has_logits_bug",
    "record_token_groups",
    "register",
    "token_groups",
    "update_metadata",
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
#: The CPU punica wrapper, whose ``add_lora_logits`` method the second fix replaces.
WRAPPER_MODULE, WRAPPER_CLASS = "vllm.lora.punica_wrapper.punica_cpu", "PunicaWrapperCPU"
# The method as vLLM shipped it, kept when patching: calls it handles right go to it.
_original_add_lora_logits: Callable[..., Any] | None = None
_warned_lm_head = False


def _logger() -> logging.Logger:
    # Under the "vllm." hierarchy the lines land in vLLM's own log handler (and so in the
    # server's log file) next to the plugin-loading messages.
    return logging.getLogger("vllm.plugins.ragtune_cpu_lora_fix")


# --- the fixed ops -------------------------------------------------------------------------


def _select(weights: torch.Tensor, indices: torch.Tensor,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather each token's adapter weights; also return which tokens have an adapter.

    The branch-free form, for code traced by torch.compile.
    """
    has_lora = indices >= 0
    selected = weights[indices.clamp(min=0)].to(dtype=dtype)
    if selected.dim() == 4:
        selected = selected.squeeze(dim=1)
    return selected, has_lora


def _lora_matmul(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
                 dtype: torch.dtype) -> torch.Tensor:
    """Each token's ``inputs @ weights[idx]^T`` in ``dtype``, and 0 where ``idx == -1``.

    ``weights`` is ``[slots, (1,) out, in]``; ``indices`` has one entry per row of
    ``inputs``, or a single entry for all of them (vLLM's LoRA logits call for one request).
    """
    import torch

    if indices.numel() not in (1, inputs.shape[0]):
        # What the original einsum raises; has_logits_bug relies on it.
        raise RuntimeError(f"LoRA indices for {indices.numel()} rows, inputs have "
                           f"{inputs.shape[0]}")
    x = inputs.to(dtype=dtype)
    if torch.compiler.is_compiling():
        selected, has_lora = _select(weights, indices, dtype)
        out = torch.einsum("bi, boi -> bo", x, selected)
        return out.masked_fill(~has_lora.unsqueeze(-1), 0)
    if weights.dim() == 4:
        weights = weights.squeeze(dim=1)
    idx = indices.tolist()
    if idx.count(idx[0]) == len(idx):  # one adapter (or none) for every row: one matmul
        if idx[0] < 0:
            return x.new_zeros(x.shape[0], weights.shape[1])
        return x @ weights[idx[0]].to(dtype=dtype).T
    out = x.new_zeros(x.shape[0], weights.shape[1])
    for slot in set(idx):
        if slot >= 0:
            rows = indices == slot
            out[rows] = x[rows] @ weights[slot].to(dtype=dtype).T
    return out


def bgmv_shrink(inputs: torch.Tensor, lora_b_weights: torch.Tensor,
                output_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                scaling: float = 1.0) -> None:
    """``output[:, :r] = scaling * inputs @ A[idx]^T``, and 0 for tokens with ``idx == -1``."""
    outputs = _lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs: torch.Tensor, lora_b_weights: torch.Tensor,
                output_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                add_inputs: bool = True) -> None:
    """``output (+)= inputs @ B[idx]^T``, adding nothing for tokens with ``idx == -1``."""
    outputs = _lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
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
    outputs = _lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = outputs


# The lm_head LoRA B weights last checked (a weak reference), their version then, and whether
# any value was nonzero.
_lm_head_checked: tuple[Any, int, bool] | None = None


def _lm_head_has_lora(lora_b_stacked: torch.Tensor) -> bool:
    """Whether any adapter slot has nonzero lm_head LoRA weights.

    Cached until the weights change: vLLM writes a slot in place (loading or resetting an
    adapter), which bumps the tensor's version counter. Without a counter (an inference-mode
    tensor) it is checked on every call: a pass over ``slots x vocab x rank`` values.
    """
    global _lm_head_checked
    try:
        version = lora_b_stacked._version
    except RuntimeError:  # inference tensors track no version
        return bool(lora_b_stacked.any())
    cached = _lm_head_checked
    if cached is None or cached[0]() is not lora_b_stacked or cached[1] != version:
        cached = _lm_head_checked = (weakref.ref(lora_b_stacked), version,
                                     bool(lora_b_stacked.any()))
    return cached[2]


def add_lora_logits(self: Any, y: torch.Tensor, x: torch.Tensor, lora_a_stacked: torch.Tensor,
                    lora_b_stacked: torch.Tensor, scale: float, *,
                    buffer: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor | None:
    """``PunicaWrapperCPU.add_lora_logits`` that survives a prompt-logprobs call.

    With no adapter targeting ``lm_head`` (all that ragtune trains) every delta is zero, and
    nothing is computed: vLLM's method would spend a ``tokens x vocab`` matmul on zeros each
    step. Otherwise rows matching the sampler mapping (one per request), or a single request
    (whose index broadcasts over its rows), go to vLLM's method. Any other row count is one
    request's prompt positions: no per-row mapping exists for them, so no logits delta is
    added (a warning says so, once).
    """
    global _warned_lm_head
    if not _lm_head_has_lora(lora_b_stacked):
        return None
    rows = x.reshape(-1, x.shape[-1]).shape[0]
    mapped = self.sampler_indices.shape[0]
    if rows == mapped or mapped == 1:
        assert _original_add_lora_logits is not None
        return _original_add_lora_logits(self, y, x, lora_a_stacked, lora_b_stacked, scale,
                                         buffer=buffer, **kwargs)
    if not _warned_lm_head:
        _warned_lm_head = True
        _logger().warning("prompt_logprobs with an adapter that has lm_head LoRA weights: "
                          "those positions' logits omit the lm_head delta (as on GPU, "
                          "vllm-project/vllm#51594); generated tokens are not affected")
    return None


setattr(add_lora_logits, _FIXED_MARK, True)


# --- the fused linear path -----------------------------------------------------------------
# vLLM's CPU wrapper runs every LoRA linear layer as one shrink and one expand call per output
# slice (q, k, v; gate, up), each finding the tokens' adapters again: 14 op calls per decoder
# layer, 420 per step of SmolLM2-135M. Profiling the worker (py-spy, 4 concurrent adapter
# requests) put a third of its time there, as much as all the base model's matmuls. The
# adapters present in a step are the same for every layer, so the wrapper now finds them once
# per step (in ``update_metadata``) and ``add_lora_linear`` runs, per adapter present, one
# shrink matmul over all slices' A matrices and one expand matmul per slice.

_original_update_metadata: Callable[..., Any] | None = None
_original_add_lora_linear: Callable[..., Any] | None = None
_GROUPS_ATTR = "_ragtune_token_groups"
_FLOAT32_EXPAND_ROWS = 16


def token_groups(indices: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """The adapter slots present in a step: ``(slot, rows)``, ``rows`` None for every token.

    Tokens with index ``-1`` (no adapter) belong to no group.

    Example:
        >>> import torch
        >>> token_groups(torch.tensor([2, 2, 2]))
        [(2, None)]
        >>> token_groups(torch.tensor([-1, -1]))
        []
        >>> [(slot, rows.tolist()) for slot, rows in token_groups(torch.tensor([0, -1, 0, 1]))]
        [(0, [0, 2]), (1, [3])]
    """
    import torch

    idx = indices.tolist()
    if not idx:
        return []
    if idx.count(idx[0]) == len(idx):
        return [] if idx[0] < 0 else [(idx[0], None)]
    return [(slot, torch.nonzero(indices == slot).squeeze(1))
            for slot in sorted(set(idx)) if slot >= 0]


def record_token_groups(wrapper: Any) -> None:
    """Store the adapter groups of ``wrapper``'s current step for :func:`add_lora_linear`."""
    indices = wrapper.token_lora_indices
    setattr(wrapper, _GROUPS_ATTR, (indices.shape[0], token_groups(indices)))


def update_metadata(self: Any, *args: Any, **kwargs: Any) -> None:
    """vLLM's ``update_metadata``, then the step's adapter groups for :func:`add_lora_linear`."""
    assert _original_update_metadata is not None
    _original_update_metadata(self, *args, **kwargs)
    record_token_groups(self)


def add_lora_linear(self: Any, y: torch.Tensor, x: torch.Tensor,
                    lora_a_stacked: tuple[torch.Tensor, ...],
                    lora_b_stacked: tuple[torch.Tensor, ...], scale: float,
                    output_slices: tuple[int, ...], *, buffer: Any = None,
                    **kwargs: Any) -> None:
    """``y[:, slice i] += (x @ A_i[slot]^T * scale) @ B_i[slot]^T`` for each token's slot.

    vLLM's CPU arithmetic (shrink in float32, expand in ``y``'s dtype), except that up to
    16 rows are expanded in float32 (faster there, and it rounds less), with the step's
    adapter groups from :func:`update_metadata`. A call whose rows do not match them (not a
    model step) goes to vLLM's method.
    """
    import torch

    groups = getattr(self, _GROUPS_ATTR, None)
    x2 = x.reshape(-1, x.shape[-1])
    if groups is None or groups[0] != x2.shape[0] or torch.compiler.is_compiling():
        assert _original_add_lora_linear is not None
        return _original_add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale,
                                         output_slices, buffer=buffer, **kwargs)
    y2 = y.view(-1, y.shape[-1])
    rank = lora_a_stacked[0].shape[-2]
    for slot, rows in groups[1]:
        xs = x2 if rows is None else x2.index_select(0, rows)
        a = (lora_a_stacked[0][slot, 0] if len(lora_a_stacked) == 1
             else torch.cat([w[slot, 0] for w in lora_a_stacked]))
        h = xs.float() @ a.float().T
        if scale != 1.0:
            h = h * scale
        # Few rows (decoding): float32 is faster than CPU bfloat16 kernels at these shapes
        # (and rounds less); many rows (a prefill): vLLM's bfloat16.
        dtype = torch.float32 if h.shape[0] <= _FLOAT32_EXPAND_ROWS else y.dtype
        h = h.to(dtype)
        offset = 0
        for i, (b, size) in enumerate(zip(lora_b_stacked, output_slices, strict=True)):
            delta = h[:, i * rank:(i + 1) * rank] @ b[slot, 0].to(dtype).T
            if rows is None:
                y2[:, offset:offset + size] += delta
            else:
                y2[rows, offset:offset + size] += delta
            offset += size
    return None


setattr(update_metadata, _FIXED_MARK, True)
setattr(add_lora_linear, _FIXED_MARK, True)

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


def has_logits_bug(wrapper_cls: type) -> bool:
    """Whether ``wrapper_cls.add_lora_logits`` fails on more rows than requests.

    Two requests in the mapping, three rows of one request's prompt positions: vLLM
    0.32's CPU wrapper raises the ``einsum`` shape error that kills its engine.

    Example:
        >>> from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU  # doctest: +SKIP
        >>> has_logits_bug(PunicaWrapperCPU)                                  # doctest: +SKIP
        True
    """
    import torch

    wrapper = wrapper_cls(max_num_batched_tokens=8, max_batches=2, device="cpu")
    wrapper._sampler_indices[:2] = torch.tensor([0, 0])
    wrapper.indices_len[:] = [3, 2, 2, 3]
    y, x = torch.zeros(3, 5), torch.ones(3, 4)
    a, b = torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 5, 2)
    try:
        wrapper.add_lora_logits(y, x, a, b, 1.0)
    except RuntimeError:
        return True
    return False


def fused_linear_agrees(wrapper_cls: type) -> bool:
    """Whether :func:`add_lora_linear` gives vLLM's results in ``wrapper_cls`` (run before
    patching, with the module's ``_original_*`` set to the class's methods).

    A mixed decoding batch and a mixed prefill batch (two adapters and tokens without one),
    two output slices, float32: equal up to rounding. Guards the fused path against a vLLM
    whose wrapper stores its metadata or weights differently.
    """
    import torch
    from vllm.lora.layers import LoRAMapping

    g = torch.Generator().manual_seed(0)
    rank, hidden, slices = 4, 6, (3, 5)
    a = tuple(torch.randn(2, 1, rank, hidden, generator=g) for _ in slices)
    b = tuple(torch.randn(2, 1, n, rank, generator=g) for n in slices)
    x = torch.randn(5, hidden, generator=g)
    y = torch.randn(5, sum(slices), generator=g)
    for prefill in (False, True):
        mapping = LoRAMapping((7, 0, 9, 7, 7), (7, 0, 9, 7, 7), is_prefill=prefill)
        wrapper = wrapper_cls(max_num_batched_tokens=8, max_batches=8, device="cpu")
        update_metadata(wrapper, mapping, [7, 9], 2, 10)
        want, got = y.clone(), y.clone()
        assert _original_add_lora_linear is not None
        _original_add_lora_linear(wrapper, want, x, a, b, 0.5, slices)
        add_lora_linear(wrapper, got, x, a, b, 0.5, slices)
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-4) or torch.equal(got, y):
            return False
    return True


# --- the plugin ----------------------------------------------------------------------------


def _disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def apply() -> str:
    """Patch the installed vLLM's CPU LoRA ops if they have the bug; return what was done.

    Idempotent. Returns one of ``"disabled"``, ``"no vllm"``, ``"already fixed"``,
    ``"already patched"`` or ``"patched: <ops>"`` (``add_lora_logits`` among them when the
    prompt-logprobs fix was applied, ``add_lora_linear`` when the fused path was); the same
    line is logged.
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
    wrapper_cls = getattr(importlib.import_module(WRAPPER_MODULE), WRAPPER_CLASS, None)
    logits_method = getattr(wrapper_cls, "add_lora_logits", None)
    patch_logits = (logits_method is not None
                    and not getattr(logits_method, _FIXED_MARK, False)
                    and has_logits_bug(wrapper_cls))
    if not to_patch and not patch_logits:
        already = all(getattr(getattr(m, n, None), _FIXED_MARK, False)
                      for m in modules for n in _OPS if hasattr(m, n))
        status = "already patched" if already else "already fixed"
        log.info("ragtune CPU LoRA fix: %s, nothing to do", status)
        return status
    ops_fixed = bool(to_patch)
    for module in modules:
        for name in to_patch:
            if hasattr(module, name):
                setattr(module, name, _FIXED[name])
    if patch_logits:
        global _original_add_lora_logits
        _original_add_lora_logits = logits_method
        wrapper_cls.add_lora_logits = add_lora_logits
        to_patch.append("add_lora_logits")
    # The fused path is a speed-up that comes with the index fix: a vLLM whose ops need no
    # fix keeps its own path.
    if ops_fixed and _patch_linear(wrapper_cls):
        to_patch.append("add_lora_linear")
    status = "patched: " + ", ".join(to_patch)
    log.info("ragtune CPU LoRA fix (vllm-project/vllm#48421, prompt_logprobs) %s in %s",
             status, ", ".join(TARGET_MODULES))
    return status


def _patch_linear(wrapper_cls: type | None) -> bool:
    """Install the fused linear path on ``wrapper_cls`` if it agrees with vLLM's (the ops
    were just fixed, so vLLM's method is now the right reference)."""
    global _original_update_metadata, _original_add_lora_linear
    linear = getattr(wrapper_cls, "add_lora_linear", None)
    update = getattr(wrapper_cls, "update_metadata", None)
    if wrapper_cls is None or linear is None or update is None:
        return False
    if getattr(linear, _FIXED_MARK, False):
        return False
    _original_update_metadata, _original_add_lora_linear = update, linear
    try:
        agrees = fused_linear_agrees(wrapper_cls)
    except Exception as exc:  # noqa: BLE001 - another vLLM layout: keep vLLM's path
        _logger().info("ragtune fused LoRA linear path not used (%s)", exc)
        agrees = False
    if not agrees:
        _logger().warning("ragtune fused LoRA linear path disagrees with vLLM's here; "
                          "keeping vLLM's (slower) per-slice path")
        return False
    wrapper_cls.update_metadata = update_metadata
    wrapper_cls.add_lora_linear = add_lora_linear
    return True


def register() -> None:
    """The ``vllm.general_plugins`` entry point: apply the fix in this vLLM process.

    Never raises: a failure is logged as an error (vLLM keeps starting, with the bug).
    """
    try:
        apply()
    except Exception:  # noqa: BLE001 - a plugin must not take the server down
        _logger().exception("ragtune CPU LoRA fix failed to apply")
