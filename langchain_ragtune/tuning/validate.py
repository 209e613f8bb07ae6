"""The one adapter validator: will vLLM serve this folder, and serve it right?

vLLM's loader (``vllm/lora/peft_helper.py``) refuses adapters with ``modules_to_save``, DoRA,
a LoRA bias, a bias other than ``"none"``, inits that rewrite base weights, or a rank above
``--max-lora-rank``; a folder trained on another base model loads but computes garbage (or
fails on a shape), and a diverged or never-trained one serves nonsense. Everything but the
values is readable from ``adapter_config.json`` and the safetensors header without torch, so
the check is cheap, runs where the adapter is trained (before it is registered) and where it
is published (before vLLM sees it), and collects every problem into one
:class:`~langchain_ragtune.errors.AdapterValidationError`.

Example:
    >>> find_adapter_problems("/nonexistent")
    ["adapter folder '/nonexistent' does not exist"]
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langchain_ragtune.errors import AdapterValidationError

__all__ = ["adapter_problems", "find_adapter_problems", "validate_adapter",
           "validate_adapter_dir"]

# Inits that rewrite the base weights when peft loads the adapter; vLLM cannot serve them.
_SUPPORTED_STR_INITS = {"gaussian", "eva", "orthogonal", "mica", "lora_ga"}
_SAFETENSORS_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL",
                       "F8_E4M3", "F8_E5M2"}
_WEIGHTS = "adapter_model.safetensors"


def _read_safetensors_header(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Parse a safetensors header without loading tensors; (header, problem)."""
    size = path.stat().st_size
    if size < 8:
        return None, f"{path.name} is truncated ({size} bytes)"
    with open(path, "rb") as handle:
        (n,) = struct.unpack("<Q", handle.read(8))
        if n <= 0 or 8 + n > size:
            return None, f"{path.name} has a corrupt header (length {n} for a {size}-byte file)"
        try:
            header = json.loads(handle.read(n))
        except ValueError:
            return None, f"{path.name} has a corrupt header (not JSON)"
    if not isinstance(header, dict):
        return None, f"{path.name} has a corrupt header (not a JSON object)"
    header.pop("__metadata__", None)
    end = 0
    for key, info in header.items():
        if (not isinstance(info, dict) or info.get("dtype") not in _SAFETENSORS_DTYPES
                or not isinstance(info.get("shape"), list)
                or not isinstance(info.get("data_offsets"), list)
                or len(info["data_offsets"]) != 2):
            return None, f"{path.name} has a corrupt entry for tensor {key!r}"
        end = max(end, int(info["data_offsets"][1]))
    if 8 + n + end != size:
        return None, (f"{path.name} is truncated or padded: its header describes {8 + n + end} "
                      f"bytes but the file has {size}")
    if not header:
        return None, f"{path.name} holds no tensors"
    extra = [k for k in header if "lora_" not in k]
    if extra:
        return None, (f"{path.name} holds non-LoRA tensors (e.g. {extra[0]!r}); vLLM rejects "
                      "them (save with save_embedding_layers=False)")
    return header, None


def _expected_dims(base: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) features of the usual projection modules of a Llama-like base model."""
    hidden = base.get("hidden_size")
    heads = base.get("num_attention_heads")
    if not hidden or not heads:
        return {}
    head_dim = base.get("head_dim") or hidden // heads
    kv = (base.get("num_key_value_heads") or heads) * head_dim
    inter = base.get("intermediate_size")
    dims = {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv),
            "v_proj": (hidden, kv), "o_proj": (heads * head_dim, hidden)}
    if inter:
        dims.update({"gate_proj": (hidden, inter), "up_proj": (hidden, inter),
                     "down_proj": (inter, hidden)})
    return dims


def _shape_problems(header: Mapping[str, Any], base: Mapping[str, Any]) -> list[str]:
    """Compare LoRA A/B shapes with the base model's layer sizes."""
    dims = _expected_dims(base)
    layers = base.get("num_hidden_layers")
    problems: list[str] = []
    for key, info in header.items():
        parts = key.split(".")
        if "lora_A" in parts:
            ab = "lora_A"
        elif "lora_B" in parts:
            ab = "lora_B"
        else:
            continue
        i = parts.index(ab)
        module = parts[i - 1] if i > 0 else ""
        if layers and "layers" in parts:
            idx = parts[parts.index("layers") + 1]
            if idx.isdigit() and int(idx) >= layers:
                problems.append(f"tensor {key} is for layer {idx}, but the base model has "
                                f"{layers} layers: it was trained on another base model")
                break
        if module not in dims or len(info["shape"]) != 2:
            continue
        fan_in, fan_out = dims[module]
        got = info["shape"][1] if ab == "lora_A" else info["shape"][0]
        want = fan_in if ab == "lora_A" else fan_out
        if got != want:
            problems.append(f"tensor {key} has size {got} where the base model's {module} has "
                            f"{want}: it was trained on another base model")
            break  # one shape mismatch says it all
    return problems


def _same_base(declared: str, base_model_path: Path, base_config: Mapping[str, Any]) -> bool:
    declared_path = Path(declared).expanduser()
    if declared_path.exists():
        try:
            if declared_path.resolve() == base_model_path.resolve():
                return True
            other = json.loads((declared_path / "config.json").read_text())
        except (OSError, ValueError):
            return False
        keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size",
                "num_attention_heads", "intermediate_size")
        return all(other.get(k) == base_config.get(k) for k in keys)
    # A hub id such as "HuggingFaceTB/SmolLM2-135M-Instruct" names the same model as a
    # local folder called "SmolLM2-135M-Instruct".
    return declared.rstrip("/").rsplit("/", 1)[-1].lower() == base_model_path.name.lower()


def find_adapter_problems(path: str | Path, base_model_path: str | Path | None = None,
                          max_lora_rank: int = 16, *, check_values: bool = True) -> list[str]:
    """Every reason the adapter at ``path`` cannot be served; empty when it can.

    Mirrors vLLM's own checks (``vllm/lora/peft_helper.py``: no ``modules_to_save``, no
    DoRA, no LoRA bias, ``r`` and every ``rank_pattern`` rank <= ``max_lora_rank``,
    ``bias == "none"``, no init that rewrites base weights) and adds what vLLM finds out
    only later or never: the weights file is present and intact, holds no NaN/inf, and was
    trained on the served base model (declared name and tensor shapes).

    Args:
        path: the adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``).
        base_model_path: the served base model's folder; ``None`` skips the base checks.
        max_lora_rank: the server's ``--max-lora-rank``.
        check_values: also load the tensors to look for NaN/inf (needs torch).

    Example:
        >>> find_adapter_problems("/nonexistent")
        ["adapter folder '/nonexistent' does not exist"]
    """
    folder = Path(path)
    if not folder.is_dir():
        return [f"adapter folder '{folder}' does not exist"]
    problems: list[str] = []
    cfg_path = folder / "adapter_config.json"
    cfg: dict[str, Any] = {}
    if not cfg_path.is_file():
        problems.append("adapter_config.json is missing (save the adapter with peft's "
                        "save_pretrained)")
    else:
        try:
            cfg = json.loads(cfg_path.read_text())
            if not isinstance(cfg, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            problems.append(f"adapter_config.json is not valid JSON ({exc})")
            cfg = {}
    if cfg:
        peft_type = str(cfg.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            problems.append(f"peft_type is {peft_type!r}; vLLM serves only LORA adapters")
        for key in ("r", "lora_alpha", "target_modules"):
            if key not in cfg:
                problems.append(f"adapter_config.json lacks {key!r}")
        if cfg.get("modules_to_save"):
            problems.append(f"modules_to_save={cfg['modules_to_save']!r}: vLLM cannot serve "
                            "fully trained extra modules; train with modules_to_save=None")
        if cfg.get("use_dora"):
            problems.append("use_dora=true: vLLM does not support DoRA; train a plain LoRA")
        if cfg.get("lora_bias"):
            problems.append("lora_bias=true: vLLM does not support LoRA bias")
        if cfg.get("bias", "none") != "none":
            problems.append(f"bias={cfg.get('bias')!r}: vLLM needs bias='none'")
        init = cfg.get("init_lora_weights", True)
        if isinstance(init, str) and init.lower() not in _SUPPORTED_STR_INITS:
            problems.append(f"init_lora_weights={init!r} rewrites the base weights; vLLM "
                            "cannot serve it")
        for feature in ("alora_invocation_tokens", "layer_replication", "use_bdlora",
                        "use_qalora"):
            if cfg.get(feature):
                problems.append(f"{feature} is set: vLLM does not support it")
        ranks = [cfg.get("r")] + list((cfg.get("rank_pattern") or {}).values())
        ranks = [r for r in ranks if r is not None]
        if any(isinstance(r, bool) or not isinstance(r, int) or r <= 0 for r in ranks):
            problems.append(f"LoRA ranks {ranks} must be positive integers")
        elif ranks and max(ranks) > max_lora_rank:
            problems.append(f"LoRA rank {max(ranks)} is above the server's max_lora_rank "
                            f"{max_lora_rank} (retrain with r <= {max_lora_rank}, or raise "
                            "RAGTUNE_MAX_LORA_RANK and restart vLLM)")

    weights = folder / _WEIGHTS
    header: dict[str, Any] | None = None
    if not weights.is_file():
        extra = " (a .bin file is present: re-save with safe_serialization=True)" if (
            folder / "adapter_model.bin").is_file() else ""
        problems.append(f"{_WEIGHTS} is missing{extra}")
    else:
        header, problem = _read_safetensors_header(weights)
        if problem:
            problems.append(problem)
        elif check_values:
            problems.extend(_value_problems(weights))

    if base_model_path is not None:
        base_path = Path(base_model_path)
        try:
            base_config = json.loads((base_path / "config.json").read_text())
        except (OSError, ValueError):
            problems.append(f"the base model folder {base_path} has no readable config.json")
        else:
            declared = cfg.get("base_model_name_or_path")
            if declared and not _same_base(str(declared), base_path, base_config):
                problems.append(f"it was trained on base model {declared!r}, but the server "
                                f"serves {base_path}")
            if header:
                problems.extend(_shape_problems(header, base_config))
    if header and isinstance(cfg.get("r"), int) and not cfg.get("rank_pattern"):
        problems.extend(_rank_problems(header, cfg["r"]))
    return problems


def _rank_problems(header: Mapping[str, Any], r: int) -> list[str]:
    """LoRA A/B shapes that disagree with the declared rank (a config from another run)."""
    for key, info in header.items():
        shape = info["shape"]
        if len(shape) == 2 and ((".lora_A." in key and shape[0] != r)
                                or (".lora_B." in key and shape[1] != r)):
            return [f"tensor {key} has shape {shape}, inconsistent with r={r} in "
                    "adapter_config.json"]
    return []


def _value_problems(weights: Path) -> list[str]:
    """NaN/inf in the adapter's tensors (a diverged training run); skipped without torch."""
    try:
        import torch
        from safetensors.torch import load_file
    except ImportError:
        return []
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - any failure to read means corrupt
        return [f"{weights.name} cannot be read ({exc})"]
    bad = [k for k, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if bad:
        return [(f"{weights.name} holds NaN or inf in {len(bad)} tensor(s), e.g. {bad[0]} "
                 "(training diverged: lower the learning rate and retrain)")]
    if tensors and all(math.isclose(float(t.abs().sum()), 0.0)
                       for k, t in tensors.items() if "lora_B" in k):
        # An untrained LoRA (B initialised to zero) changes nothing: serving it is pointless
        # and usually means training never ran.
        return [f"{weights.name} has all-zero lora_B weights: the adapter was never trained"]
    return []


def validate_adapter(path: str | Path, base_model_path: str | Path | None = None,
                     max_lora_rank: int = 16, *, check_values: bool = True,
                     raise_on_error: bool = True) -> list[str]:
    """Check an adapter before it is sent to vLLM; raise with every problem found.

    Args:
        path: the adapter folder.
        base_model_path: the served base model's folder (``None`` skips the base checks).
        max_lora_rank: the server's ``--max-lora-rank``.
        check_values: also look for NaN/inf and never-trained weights (needs torch).
        raise_on_error: ``False`` returns the problems instead of raising.

    Returns:
        The problems (empty when the adapter can be served).

    Raises:
        AdapterValidationError: any problem, all of them listed (when ``raise_on_error``).

    Example:
        >>> validate_adapter("/adapters/user-42/v3", "/models/SmolLM2-135M-Instruct")  # doctest: +SKIP
        []
    """
    problems = find_adapter_problems(path, base_model_path, max_lora_rank,
                                     check_values=check_values)
    if problems and raise_on_error:
        raise AdapterValidationError(str(path), problems)
    return problems


def adapter_problems(path: str | Path, *, max_rank: int = 16,
                     base_model: str | Path | None = None) -> list[str]:
    """:func:`find_adapter_problems` under its earlier name and keywords, reading headers
    only as it did (kept for one release)."""
    return find_adapter_problems(path, base_model, max_rank, check_values=False)


def validate_adapter_dir(path: str | Path, *, max_rank: int = 16,
                         base_model: str | Path | None = None) -> None:
    """:func:`validate_adapter` under its earlier name and keywords (kept for one release)."""
    validate_adapter(path, base_model, max_rank)
