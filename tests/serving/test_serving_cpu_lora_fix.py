"""The CPU LoRA "-1 index" fix at the op level: the originals have the bug, the fix does not,
and for valid indices both agree (up to float rounding)."""

from __future__ import annotations

import importlib

import pytest

torch = pytest.importorskip("torch")
lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops",
                               reason="vLLM is not installed (pip install '.[serve]')")

from langchain_ragtune.serving import cpu_lora_fix as fix

# Keep the unpatched functions whatever other tests did to the module.
ORIGINAL = {name: getattr(lora_ops, name) for name in ("bgmv_shrink", "bgmv_expand",
                                                      "bgmv_expand_slice", "sgmv_shrink")}
if getattr(ORIGINAL["bgmv_shrink"], "__ragtune_cpu_lora_fix__", False):  # pragma: no cover
    pytest.skip("vLLM ops were patched before this module imported", allow_module_level=True)


from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU  # noqa: E402

ORIGINAL_LOGITS = PunicaWrapperCPU.add_lora_logits
ORIGINAL_LINEAR = PunicaWrapperCPU.add_lora_linear
_WRAPPER_METHODS = ("add_lora_logits", "add_lora_linear", "update_metadata")


@pytest.fixture
def restore_vllm_ops():
    """Undo apply() after a test, so every test sees vLLM as installed."""
    saved = {(m, n): getattr(importlib.import_module(m), n)
             for m in fix.TARGET_MODULES for n in ("bgmv_shrink", "bgmv_expand",
                                                   "bgmv_expand_slice")}
    # update_metadata is inherited: None here means "not set on the class itself".
    saved_methods = {n: PunicaWrapperCPU.__dict__.get(n) for n in _WRAPPER_METHODS}
    yield
    for (m, n), fn in saved.items():
        setattr(importlib.import_module(m), n, fn)
    for n, fn in saved_methods.items():
        if fn is None:
            if n in PunicaWrapperCPU.__dict__:
                delattr(PunicaWrapperCPU, n)
        else:
            setattr(PunicaWrapperCPU, n, fn)


def _batch(seed: int = 0, tokens: int = 6, slots: int = 3, rank: int = 4, hidden: int = 8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=g)
    a = torch.randn(slots, 1, rank, hidden, generator=g)  # shrink weights: [slots, 1, r, in]
    b = torch.randn(slots, 1, hidden, rank, generator=g)  # expand weights: [slots, 1, out, r]
    h = torch.randn(tokens, rank, generator=g)
    return x, a, b, h


def test_the_installed_ops_have_the_bug_and_the_fix_does_not() -> None:
    # If this fails, the installed vLLM fixed #48421 itself: the plugin is then a no-op and
    # this test (and the plugin) can go.
    for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice"):
        assert fix.has_index_bug(name, ORIGINAL[name]), name
        assert not fix.has_index_bug(name, getattr(fix, name)), name


# Mixed adapters, one adapter for every token (the one-matmul path), and one index for all
# rows (vLLM's LoRA logits call for a single request broadcasts it).
VALID_INDICES = ([0, 2, 1, 2, 0, 1], [2] * 6, [1])


@pytest.mark.parametrize("indices", VALID_INDICES)
def test_valid_indices_agree_with_vllms_ops(indices) -> None:
    x, a, b, h = _batch()
    idx = torch.tensor(indices)
    close = dict(rtol=1e-5, atol=1e-5)
    for scaling in (1.0, 0.5):
        want, got = torch.zeros(6, 4), torch.zeros(6, 4)
        ORIGINAL["bgmv_shrink"](x, a, want, idx, scaling)
        fix.bgmv_shrink(x, a, got, idx, scaling)
        torch.testing.assert_close(got, want, **close)
    for add in (True, False):
        base = torch.randn(6, 8)
        want, got = base.clone(), base.clone()
        ORIGINAL["bgmv_expand"](h, b, want, idx, add)
        fix.bgmv_expand(h, b, got, idx, add)
        torch.testing.assert_close(got, want, **close)
        base = torch.randn(6, 20)
        want, got = base.clone(), base.clone()
        ORIGINAL["bgmv_expand_slice"](h, b, want, idx, 5, 8, add)
        fix.bgmv_expand_slice(h, b, got, idx, 5, 8, add)
        torch.testing.assert_close(got, want, **close)
        assert torch.equal(got[:, :5], base[:, :5]) and torch.equal(got[:, 13:], base[:, 13:])


def test_bfloat16_weights_as_vllm_serves_them() -> None:
    x, a, b, h = (t.to(torch.bfloat16) for t in _batch())
    idx = torch.tensor([0, 0, 2, -1, 2, 0])
    want, got = torch.zeros(6, 4), torch.zeros(6, 4)  # shrink buffers are float32 in vLLM
    ORIGINAL["bgmv_shrink"](x, a, want, idx.clamp(min=0), 1.0)
    fix.bgmv_shrink(x, a, got, idx, 1.0)
    rows = idx >= 0
    torch.testing.assert_close(got[rows], want[rows], rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(got[~rows]) == 0


def test_a_row_count_without_indices_is_an_error_as_in_vllm() -> None:
    x, a, _, _ = _batch()
    for op in (ORIGINAL["bgmv_shrink"], fix.bgmv_shrink):
        with pytest.raises(RuntimeError):
            op(x, a, torch.zeros(6, 4), torch.tensor([0, 1]), 1.0)


def test_no_lora_tokens_get_nothing_in_a_mixed_batch() -> None:
    x, a, b, h = _batch()
    idx = torch.tensor([0, -1, 2, -1, 1, -1])
    base_rows = idx < 0

    # shrink: original gives the -1 rows the last slot's product; the fix gives zeros.
    buggy, fixed = torch.zeros(6, 4), torch.zeros(6, 4)
    ORIGINAL["bgmv_shrink"](x, a, buggy, idx, 1.0)
    fix.bgmv_shrink(x, a, fixed, idx, 1.0)
    last = x[base_rows] @ a[-1, 0].T
    assert torch.allclose(buggy[base_rows], last)
    assert torch.count_nonzero(fixed[base_rows]) == 0
    torch.testing.assert_close(fixed[~base_rows], buggy[~base_rows], rtol=1e-5, atol=1e-5)

    # expand (adds into the layer output): -1 rows keep the base output exactly.
    layer = torch.randn(6, 8)
    buggy, fixed = layer.clone(), layer.clone()
    ORIGINAL["bgmv_expand"](h, b, buggy, idx, True)
    fix.bgmv_expand(h, b, fixed, idx, True)
    assert not torch.allclose(buggy[base_rows], layer[base_rows])
    assert torch.equal(fixed[base_rows], layer[base_rows])
    torch.testing.assert_close(fixed[~base_rows], buggy[~base_rows], rtol=1e-5, atol=1e-5)

    layer = torch.randn(6, 20)
    buggy, fixed = layer.clone(), layer.clone()
    ORIGINAL["bgmv_expand_slice"](h, b, buggy, idx, 4, 8, True)
    fix.bgmv_expand_slice(h, b, fixed, idx, 4, 8, True)
    assert not torch.allclose(buggy[base_rows], layer[base_rows])
    assert torch.equal(fixed[base_rows], layer[base_rows])


def test_apply_patches_every_reference_and_fixes_the_prefill_path(restore_vllm_ops) -> None:
    assert fix.apply() == ("patched: bgmv_shrink, bgmv_expand, bgmv_expand_slice, "
                           "add_lora_logits, add_lora_linear")
    assert PunicaWrapperCPU.add_lora_logits is fix.add_lora_logits
    assert PunicaWrapperCPU.add_lora_linear is fix.add_lora_linear
    assert PunicaWrapperCPU.update_metadata is fix.update_metadata
    for module in fix.TARGET_MODULES:
        mod = importlib.import_module(module)
        assert mod.bgmv_shrink is fix.bgmv_shrink, module
        assert mod.bgmv_expand_slice is fix.bgmv_expand_slice, module
    assert fix.apply() == "already patched"

    # sgmv_shrink (prefill) looks bgmv_shrink up in its module: fixed through the patch.
    x, a, _, _ = _batch()
    out = torch.zeros(6, 4)
    lora_ops.sgmv_shrink(x, a, out, torch.tensor([0, 2]), torch.tensor([3, 3]),
                         torch.tensor([-1, 1]), 2, 3, 6, 1.0)
    assert torch.count_nonzero(out[:3]) == 0 and torch.count_nonzero(out[3:]) > 0


def _wrapper(requests: list[int], rows: int):
    """A CPU punica wrapper mapped to ``requests`` (one LoRA slot index per request)."""
    wrapper = PunicaWrapperCPU(max_num_batched_tokens=64, max_batches=8, device="cpu")
    wrapper._sampler_indices[: len(requests)] = torch.tensor(requests)
    wrapper.indices_len[:] = [rows, len(requests), len(requests), rows]
    return wrapper


def _logits_weights(vocab: int = 7, hidden: int = 8, rank: int = 4, lm_head: bool = False):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2, 1, rank, hidden, generator=g)
    b = torch.randn(2, 1, vocab, rank, generator=g) if lm_head else torch.zeros(2, 1, vocab, rank)
    return a, b


def test_prompt_logprobs_rows_break_vllms_logits_wrapper_not_the_fixed_one(
        restore_vllm_ops) -> None:
    # The installed vLLM has the bug (if this fails, it was fixed upstream: drop the fix).
    assert fix.has_logits_bug(PunicaWrapperCPU)
    # 5 requests in the batch; one of them asks for the logits of its 56 prompt positions.
    x = torch.randn(56, 8)
    a, b = _logits_weights()
    with pytest.raises(RuntimeError):
        ORIGINAL_LOGITS(_wrapper([0, 0, 1, -1, 0], 56), torch.zeros(56, 7), x, a, b, 1.0)
    fix.apply()
    assert not fix.has_logits_bug(PunicaWrapperCPU)
    logits = torch.randn(56, 7)
    y = logits.clone()
    _wrapper([0, 0, 1, -1, 0], 56).add_lora_logits(y, x, a, b, 1.0)
    assert torch.equal(y, logits)  # no lm_head weights: no delta, exactly


def test_logits_calls_with_a_mapping_still_go_to_vllm(restore_vllm_ops, caplog) -> None:
    fix.apply()
    a, b = _logits_weights(lm_head=True)
    # One row per request (sampling): vLLM's method, with the adapters' lm_head deltas.
    x = torch.randn(3, 8)
    want, got = torch.zeros(3, 7), torch.zeros(3, 7)
    ORIGINAL_LOGITS(_wrapper([0, 1, -1], 3), want, x, a, b, 1.0)
    _wrapper([0, 1, -1], 3).add_lora_logits(got, x, a, b, 1.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(got[:2]) > 0
    # One request alone: its index broadcasts over its prompt rows, as in vLLM.
    x = torch.randn(9, 8)
    want, got = torch.zeros(9, 7), torch.zeros(9, 7)
    ORIGINAL_LOGITS(_wrapper([1], 9), want, x, a, b, 1.0)
    _wrapper([1], 9).add_lora_logits(got, x, a, b, 1.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Prompt rows of one request among several, with lm_head weights: no delta, a warning.
    fix._warned_lm_head = False
    y = torch.zeros(9, 7)
    with caplog.at_level("WARNING", logger="vllm.plugins.ragtune_cpu_lora_fix"):
        _wrapper([1, 0], 9).add_lora_logits(y, x, a, b, 1.0)
    assert torch.count_nonzero(y) == 0
    assert "lm_head" in caplog.text


def test_disabled_by_environment(monkeypatch, restore_vllm_ops) -> None:
    monkeypatch.setenv(fix.DISABLE_ENV, "1")
    assert fix.apply() == "disabled"
    assert lora_ops.bgmv_shrink is ORIGINAL["bgmv_shrink"]
    assert PunicaWrapperCPU.add_lora_logits is ORIGINAL_LOGITS
    assert PunicaWrapperCPU.add_lora_linear is ORIGINAL_LINEAR


def test_the_plugin_is_declared_for_vllm() -> None:
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert eps.get("ragtune_cpu_lora_fix") == "langchain_ragtune.serving.cpu_lora_fix:register"


def test_the_ops_benchmark_compares_both_on_every_case() -> None:
    from langchain_ragtune.bench.lora_ops import LORA_OPS_CASES, run_lora_ops_bench

    out = run_lora_ops_bench(hidden=64, intermediate=96, rank=8, repeats=10, quiet=True)
    assert list(out["cases"]) == [name for name, _ in LORA_OPS_CASES]
    for case in out["cases"].values():
        for op in ("shrink_us", "expand_us"):
            assert case[op]["vllm"] > 0 and case[op]["ragtune"] > 0
        assert case["max_abs_diff"] < 0.05  # bfloat16 outputs; the valid rows agree
    assert out["cases"]["prefill-57"]["tokens"] == 57
    for case in out["cases"].values():  # a decoder layer's LoRA work, both paths
        assert case["layer_us"]["vllm"] > 0 and case["layer_us"]["ragtune"] > 0
        assert case["layer_max_rel_diff"] < 0.02
    assert PunicaWrapperCPU.add_lora_linear is ORIGINAL_LINEAR
    assert lora_ops.bgmv_shrink is ORIGINAL["bgmv_shrink"]  # measured, not patched


# --- the fused linear path -----------------------------------------------------------------

from vllm.lora.layers import LoRAMapping

# lora ids per token (0: no adapter); the server's slots hold ids 7 and 9.
SLOT_IDS = [7, 9, None]


def _mapped_wrapper(token_ids: tuple[int, ...], prefill: bool):
    wrapper = PunicaWrapperCPU(max_num_batched_tokens=64, max_batches=8, device="cpu")
    wrapper.update_metadata(LoRAMapping(token_ids, token_ids, is_prefill=prefill),
                            SLOT_IDS, 3, 100)
    return wrapper


def _linear_weights(dtype, slices=(12, 4, 4), hidden: int = 8, rank: int = 4):
    g = torch.Generator().manual_seed(3)
    a = tuple(torch.randn(3, 1, rank, hidden, generator=g).to(dtype) for _ in slices)
    b = tuple(torch.randn(3, 1, n, rank, generator=g).to(dtype) for n in slices)
    return a, b


MAPPINGS = {
    "decode, mixed with base tokens": ((7, 0, 9, 7, 0), False),
    "decode, one adapter": ((9, 9, 9), False),
    "prefill of two adapters and a base request": ((7, 7, 7, 0, 0, 9, 9, 9, 9), True),
    "prefill, base only": ((0,) * 6, True),
    # more rows than the float32-expand threshold: the bfloat16 path
    "long prefill, mixed": ((7,) * 20 + (0,) * 3 + (9,) * 5, True),
}


@pytest.mark.parametrize("case", list(MAPPINGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_linear_path_gives_vllms_results(case, dtype, restore_vllm_ops) -> None:
    fix.apply()  # vLLM's add_lora_linear now runs on the fixed ops: the reference
    token_ids, prefill = MAPPINGS[case]
    slices = (12, 4, 4)
    a, b = _linear_weights(dtype, slices)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(len(token_ids), 8, generator=g).to(dtype)
    layer = torch.randn(len(token_ids), sum(slices), generator=g).to(dtype)
    want, got = layer.clone(), layer.clone()
    ORIGINAL_LINEAR(_mapped_wrapper(token_ids, prefill), want, x, a, b, 0.5, slices)
    wrapper = _mapped_wrapper(token_ids, prefill)
    assert PunicaWrapperCPU.add_lora_linear is fix.add_lora_linear
    wrapper.add_lora_linear(got, x, a, b, 0.5, slices)
    base_rows = torch.tensor(token_ids) == 0
    assert torch.equal(got[base_rows], layer[base_rows])  # no adapter: untouched
    # bfloat16: the fused path rounds differently (float32 expand for few rows)
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    if not base_rows.all():
        assert not torch.equal(got, layer)


def test_fused_linear_falls_back_to_vllm_off_the_step_mapping(restore_vllm_ops) -> None:
    fix.apply()
    a, b = _linear_weights(torch.float32, (4,))
    wrapper = _mapped_wrapper((7, 7, 9), False)
    # 2 rows against a 3-token step: not a model step, vLLM's method (which rejects it)
    with pytest.raises(RuntimeError):
        wrapper.add_lora_linear(torch.zeros(2, 4), torch.randn(2, 8), a, b, 1.0, (4,))


def test_the_self_check_accepts_the_fused_path_and_rejects_a_wrong_one(
        restore_vllm_ops, monkeypatch) -> None:
    fix.apply()  # sets the fused path's references to vLLM's methods
    assert fix._original_add_lora_linear is ORIGINAL_LINEAR
    assert fix.fused_linear_agrees(PunicaWrapperCPU)
    # A fused path that got the weights wrong (here: every B doubled) is rejected.
    real = fix.add_lora_linear

    def doubled(self, y, x, a, b, scale, slices, **kw):
        return real(self, y, x, a, tuple(w * 2 for w in b), scale, slices, **kw)

    monkeypatch.setattr(fix, "add_lora_linear", doubled)
    assert not fix.fused_linear_agrees(PunicaWrapperCPU)


def test_token_groups() -> None:
    groups = fix.token_groups(torch.tensor([3, -1, 3, 0]))
    assert [(slot, rows.tolist()) for slot, rows in groups] == [(0, [3]), (3, [0, 2])]
    assert fix.token_groups(torch.tensor([], dtype=torch.long)) == []


def test_zero_lm_head_weights_skip_the_logits_delta(restore_vllm_ops) -> None:
    fix.apply()
    a, b = _logits_weights(lm_head=False)
    x = torch.randn(3, 8)
    logits = torch.randn(3, 7)
    y = logits.clone()
    assert _wrapper([0, 1, -1], 3).add_lora_logits(y, x, a, b, 1.0) is None
    assert torch.equal(y, logits)
    # Writing a slot in place (vLLM loading an lm_head adapter) is seen at the next call.
    b[1, 0] = 1.0
    want = logits.clone()
    ORIGINAL_LOGITS(_wrapper([0, 1, -1], 3), want, x, a, b, 1.0)
    _wrapper([0, 1, -1], 3).add_lora_logits(y, x, a, b, 1.0)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    assert not torch.equal(y[1], logits[1])


def test_lm_head_check_without_a_version_counter() -> None:
    # Tensors made in inference mode track no version: checked on every call instead.
    with torch.inference_mode():
        b = torch.zeros(2, 1, 7, 4)
    assert fix._lm_head_has_lora(b) is False
    with torch.inference_mode():
        b[1, 0, 3, 2] = 0.5
    assert fix._lm_head_has_lora(b) is True
