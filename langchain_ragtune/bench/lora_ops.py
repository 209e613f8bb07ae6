"""``ragtune bench lora_ops``: vLLM's CPU LoRA ops against the serving plugin's, per call.

Example:
    >>> from langchain_ragtune.bench.lora_ops import LORA_OPS_CASES
    >>> [name for name, _ in LORA_OPS_CASES][:2]
    ['decode-1', 'decode-4-mixed']
"""

from __future__ import annotations

import sys
import time
from typing import Any

from langchain_ragtune.bench._common import now_iso
from langchain_ragtune.hardware import machine_info

__all__ = ["LORA_OPS_CASES", "run_lora_ops_bench"]

#: (name, tokens, adapter index of each token): one decoding token, a decoding batch of four
#: requests on two adapters and the base model, a 57-token prefill (a canary's scoring
#: request), and that prefill batched with the decoding batch.
LORA_OPS_CASES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("decode-1", (0,)),
    ("decode-4-mixed", (0, 0, 1, -1)),
    ("prefill-57", (0,) * 57),
    ("prefill-57+decode-4", (0,) * 57 + (0, 0, 1, -1)),
)


def _lora_layer_timing(indices: tuple[int, ...], *, hidden: int, intermediate: int, rank: int,
                       slots: int, generator: Any, block: int, prefill: bool
                       ) -> dict[str, Any]:
    """One decoder layer's LoRA work (q/k/v, o, gate/up, down) per step, in microseconds:
    vLLM's ``PunicaWrapperCPU.add_lora_linear`` on its own ops against the plugin's fused
    :func:`~langchain_ragtune.serving.cpu_lora_fix.add_lora_linear`, interleaved."""
    import torch
    from vllm.lora.layers import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from langchain_ragtune.serving import cpu_lora_fix as fix

    # Slot i holds lora id i + 1; -1 (no adapter) is id 0 in vLLM's mapping.
    ids = tuple(i + 1 for i in indices)
    wrapper = PunicaWrapperCPU(max_num_batched_tokens=max(256, len(ids)), max_batches=8,
                               device="cpu")
    wrapper.update_metadata(LoRAMapping(ids, ids, is_prefill=prefill),
                            list(range(1, slots + 1)), slots, 49152)
    fix.record_token_groups(wrapper)
    n = len(ids)
    kv = hidden // 3  # k and v width: SmolLM2-135M has 3 key/value heads of its 9 (576 / 3)
    modules = ((hidden, (hidden, kv, kv)), (hidden, (hidden,)),
               (hidden, (intermediate, intermediate)), (intermediate, (hidden,)))
    calls = []
    for fan_in, outs in modules:
        a = tuple(torch.randn(slots, 1, rank, fan_in, generator=generator).to(torch.bfloat16)
                  for _ in outs)
        b = tuple(torch.randn(slots, 1, o, rank, generator=generator).to(torch.bfloat16)
                  for o in outs)
        x = torch.randn(n, fan_in, generator=generator).to(torch.bfloat16)
        y = torch.zeros(n, sum(outs), dtype=torch.bfloat16)
        calls.append((x, a, b, outs, {"vllm": y.clone(), "ragtune": y.clone()}))
    impl = {"vllm": PunicaWrapperCPU.add_lora_linear, "ragtune": fix.add_lora_linear}

    def layer(k: str) -> None:
        for x, a, b, outs, ys in calls:
            impl[k](wrapper, ys[k], x, a, b, 1.0, outs)

    spent = {k: 0.0 for k in impl}
    for k in impl:
        layer(k)  # warm up
    for _ in range(10):
        for k in impl:
            t0 = time.perf_counter()
            for _ in range(block):
                layer(k)
            spent[k] += time.perf_counter() - t0
    # One call each on fresh outputs; relative to the largest value, since bfloat16 rounding
    # is relative (the fused path keeps float32 longer for few rows).
    valid = torch.tensor(indices) >= 0
    diff = 0.0
    for x, a, b, outs, _ in calls:
        ys = {k: torch.zeros(n, sum(outs), dtype=torch.bfloat16) for k in impl}
        for k, fn in impl.items():
            fn(wrapper, ys[k], x, a, b, 1.0, outs)
        want = ys["vllm"][valid].float()
        diff = max(diff, float((want - ys["ragtune"][valid].float()).abs().max()
                               / want.abs().max().clamp(min=1e-12)))
    return {"us": {k: round(v / (10 * block) * 1e6, 1) for k, v in spent.items()},
            "max_rel_diff": diff}


def run_lora_ops_bench(*, hidden: int = 576, intermediate: int = 1536, rank: int = 16,
                       slots: int = 4, repeats: int = 300, threads: int = 1,
                       quiet: bool = False) -> dict[str, Any]:
    """Time vLLM's CPU LoRA ops against the ragtune plugin's, per call, on model-sized tensors.

    The ops are what an adapter adds to every linear layer on CPU (``bgmv_shrink`` into the
    rank, ``bgmv_expand`` out of it), about 420 calls per decoding step for SmolLM2-135M.
    Each case times both implementations interleaved (alternating blocks of ``repeats //
    10`` calls), with the default shapes those of SmolLM2-135M (hidden 576, MLP 1536) at
    ``--max-lora-rank 16`` and ``--max-loras 4``, bfloat16 weights as vLLM serves them. It
    also reports the largest difference between the two outputs on the valid rows (tokens
    with index -1 differ on purpose: that is the "-1 index" bug vLLM's ops have).

    ``layer_us`` is a whole decoder layer's LoRA work per step (the four LoRA linears, seven
    output slices): vLLM's CPU wrapper calling its ops per slice against the plugin's fused
    path, which finds the step's adapters once and runs one shrink per layer.

    Returns:
        ``{"cases": {name: {"tokens", "shrink_us": {"vllm", "ragtune"}, "expand_us": {...},
        "layer_us": {...}, "speedup": {...}, "max_abs_diff", "layer_max_rel_diff"}},
        "settings", "machine", "date"}``.
    """
    import torch
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from langchain_ragtune.serving import cpu_lora_fix as fix

    originals = {n: getattr(lora_ops, n) for n in ("bgmv_shrink", "bgmv_expand")}
    if any(getattr(f, "__ragtune_cpu_lora_fix__", False)
           for f in (*originals.values(), PunicaWrapperCPU.add_lora_linear)):
        raise RuntimeError("vLLM's LoRA ops are patched in this process: run the benchmark in "
                           "a fresh one (`ragtune bench lora_ops`).")
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(slots, 1, rank, hidden, generator=g).to(torch.bfloat16)
    b = torch.randn(slots, 1, intermediate, rank, generator=g).to(torch.bfloat16)
    block = max(1, repeats // 10)

    def timed(fn: Any, *args: Any) -> float:
        t0 = time.perf_counter()
        for _ in range(block):
            fn(*args)
        return time.perf_counter() - t0

    cases: dict[str, Any] = {}
    for name, indices in LORA_OPS_CASES:
        idx = torch.tensor(indices)
        n = len(indices)
        x = torch.randn(n, hidden, generator=g).to(torch.bfloat16)
        h = torch.randn(n, rank, generator=g)
        outs = {k: torch.zeros(n, rank) for k in ("vllm", "ragtune")}
        ys = {k: torch.zeros(n, intermediate, dtype=torch.bfloat16) for k in ("vllm", "ragtune")}
        impl = {"vllm": originals, "ragtune": {"bgmv_shrink": fix.bgmv_shrink,
                                               "bgmv_expand": fix.bgmv_expand}}
        spent = {(op, k): 0.0 for op in ("shrink", "expand") for k in impl}
        for k in impl:  # warm up
            impl[k]["bgmv_shrink"](x, a, outs[k], idx, 1.0)
            impl[k]["bgmv_expand"](h, b, ys[k], idx, False)
        for _ in range(10):
            for k in impl:
                spent["shrink", k] += timed(impl[k]["bgmv_shrink"], x, a, outs[k], idx, 1.0)
                spent["expand", k] += timed(impl[k]["bgmv_expand"], h, b, ys[k], idx, False)
        valid = idx >= 0
        diff = max(float((outs["vllm"][valid] - outs["ragtune"][valid]).abs().max()),
                   float((ys["vllm"][valid].float() - ys["ragtune"][valid].float()).abs().max()))
        us = {op: {k: round(spent[op, k] / (10 * block) * 1e6, 1) for k in impl}
              for op in ("shrink", "expand")}
        layer = _lora_layer_timing(indices, hidden=hidden, intermediate=intermediate,
                                   rank=rank, slots=slots, generator=g, block=block,
                                   prefill=name.startswith("prefill"))
        cases[name] = {"tokens": n, "shrink_us": us["shrink"], "expand_us": us["expand"],
                       "layer_us": layer["us"],
                       "speedup": {**{op: round(us[op]["vllm"] / us[op]["ragtune"], 2)
                                      for op in us},
                                   "layer": round(layer["us"]["vllm"] / layer["us"]["ragtune"],
                                                  2)},
                       "max_abs_diff": diff, "layer_max_rel_diff": layer["max_rel_diff"]}
        if not quiet:
            print(f"bench lora_ops: {name}: shrink {us['shrink']['vllm']} -> "
                  f"{us['shrink']['ragtune']} us, expand {us['expand']['vllm']} -> "
                  f"{us['expand']['ragtune']} us, decoder layer {layer['us']['vllm']} -> "
                  f"{layer['us']['ragtune']} us", file=sys.stderr, flush=True)
    return {
        "cases": cases,
        "settings": {"hidden": hidden, "intermediate": intermediate, "rank": rank,
                     "slots": slots, "repeats": repeats, "threads": threads,
                     "dtype": "bfloat16 weights; shrink into float32, expand into bfloat16"},
        "machine": machine_info(),
        "date": now_iso(),
    }
