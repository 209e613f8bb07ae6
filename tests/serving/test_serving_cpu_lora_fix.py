"""The CPU LoRA "-1 index" fix at the op level: the originals have the bug, the fix does not,
and for valid indices both agree bit for bit."""

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


@pytest.fixture
def restore_vllm_ops():
    """Undo apply() after a test, so every test sees vLLM as installed."""
    saved = {(m, n): getattr(importlib.import_module(m), n)
             for m in fix.TARGET_MODULES for n in ("bgmv_shrink", "bgmv_expand",
                                                   "bgmv_expand_slice")}
    yield
    for (m, n), fn in saved.items():
        setattr(importlib.import_module(m), n, fn)


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


def test_valid_indices_are_bit_identical() -> None:
    x, a, b, h = _batch()
    idx = torch.tensor([0, 2, 1, 2, 0, 1])
    for scaling in (1.0, 0.5):
        want, got = torch.zeros(6, 4), torch.zeros(6, 4)
        ORIGINAL["bgmv_shrink"](x, a, want, idx, scaling)
        fix.bgmv_shrink(x, a, got, idx, scaling)
        assert torch.equal(want, got)
    for add in (True, False):
        base = torch.randn(6, 8)
        want, got = base.clone(), base.clone()
        ORIGINAL["bgmv_expand"](h, b, want, idx, add)
        fix.bgmv_expand(h, b, got, idx, add)
        assert torch.equal(want, got)
        base = torch.randn(6, 20)
        want, got = base.clone(), base.clone()
        ORIGINAL["bgmv_expand_slice"](h, b, want, idx, 5, 8, add)
        fix.bgmv_expand_slice(h, b, got, idx, 5, 8, add)
        assert torch.equal(want, got)


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
    assert torch.equal(buggy[~base_rows], fixed[~base_rows])

    # expand (adds into the layer output): -1 rows keep the base output exactly.
    layer = torch.randn(6, 8)
    buggy, fixed = layer.clone(), layer.clone()
    ORIGINAL["bgmv_expand"](h, b, buggy, idx, True)
    fix.bgmv_expand(h, b, fixed, idx, True)
    assert not torch.allclose(buggy[base_rows], layer[base_rows])
    assert torch.equal(fixed[base_rows], layer[base_rows])
    assert torch.equal(buggy[~base_rows], fixed[~base_rows])

    layer = torch.randn(6, 20)
    buggy, fixed = layer.clone(), layer.clone()
    ORIGINAL["bgmv_expand_slice"](h, b, buggy, idx, 4, 8, True)
    fix.bgmv_expand_slice(h, b, fixed, idx, 4, 8, True)
    assert not torch.allclose(buggy[base_rows], layer[base_rows])
    assert torch.equal(fixed[base_rows], layer[base_rows])


def test_apply_patches_every_reference_and_fixes_the_prefill_path(restore_vllm_ops) -> None:
    assert fix.apply() == "patched: bgmv_shrink, bgmv_expand, bgmv_expand_slice"
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


def test_disabled_by_environment(monkeypatch, restore_vllm_ops) -> None:
    monkeypatch.setenv(fix.DISABLE_ENV, "1")
    assert fix.apply() == "disabled"
    assert lora_ops.bgmv_shrink is ORIGINAL["bgmv_shrink"]


def test_the_plugin_is_declared_for_vllm() -> None:
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert eps.get("ragtune_cpu_lora_fix") == "langchain_ragtune.serving.cpu_lora_fix:register"
