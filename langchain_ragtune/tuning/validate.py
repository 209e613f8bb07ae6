"""Check an adapter folder against what vLLM will accept, before anything is published.

vLLM's loader (``vllm/lora/peft_helper.py``) refuses adapters with ``modules_to_save``, DoRA,
a bias other than ``"none"``, or a rank above ``--max-lora-rank``; a folder trained on another
base model loads but computes garbage (or fails on a shape). All of this is readable from
``adapter_config.json`` and the safetensors header, without torch, so the check is cheap and
collects every problem into one :class:`~langchain_ragtune.errors.AdapterValidationError`.

When the serving side provides ``langchain_ragtune.serving.client.validate_adapter``, the
publish step runs that too (it may know more about the server it targets).

Example:
    >>> adapter_problems("/nonexistent", max_rank=16)[0]
    "no adapter folder at '/nonexistent'"
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from langchain_ragtune.errors import AdapterValidationError

__all__ = ["adapter_problems", "validate_adapter_dir"]

_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes)."""
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError("file is shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n <= 0 or n > 100_000_000:
            raise ValueError(f"implausible header size {n}")
        return json.loads(fh.read(n))


def adapter_problems(path: str | Path, *, max_rank: int = 16,
                     base_model: str | Path | None = None) -> list[str]:
    """Every reason vLLM would refuse (or mis-serve) the adapter at ``path``; [] if none.

    Args:
        path: the adapter folder.
        max_rank: the server's ``--max-lora-rank``.
        base_model: the base model folder it must fit; its ``config.json`` sizes are
            compared with the LoRA weight shapes.
    """
    folder = Path(path)
    if not folder.is_dir():
        return [f"no adapter folder at {str(path)!r}"]
    problems: list[str] = []
    cfg_path = folder / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        return [f"{cfg_path} is missing (not a peft adapter folder)"]
    except ValueError as exc:
        return [f"{cfg_path} is not valid JSON ({exc})"]
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        problems.append(f"peft_type is {cfg.get('peft_type')!r}; only LORA adapters can be served")
    r = cfg.get("r")
    if not isinstance(r, int) or r <= 0:
        problems.append(f"rank r={r!r} is not a positive int")
    elif r > max_rank:
        problems.append(f"rank r={r} is above the server's max_lora_rank={max_rank}; train with "
                        f"lora_r <= {max_rank} or raise RAGTUNE_MAX_LORA_RANK")
    if cfg.get("modules_to_save"):
        problems.append(f"modules_to_save={cfg['modules_to_save']!r}; vLLM cannot serve extra "
                        "trained modules (train without modules_to_save)")
    if cfg.get("use_dora"):
        problems.append("use_dora=True; vLLM does not serve DoRA adapters")
    if cfg.get("bias", "none") != "none":
        problems.append(f"bias={cfg.get('bias')!r}; vLLM needs bias='none'")
    weights = next((folder / n for n in _WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        problems.append(f"no adapter weights ({' or '.join(_WEIGHT_FILES)}) in {folder}")
        return problems
    if weights.stat().st_size == 0:
        problems.append(f"{weights.name} is empty")
        return problems
    if weights.suffix != ".safetensors":
        return problems
    try:
        header = _safetensors_header(weights)
    except (OSError, ValueError) as exc:
        problems.append(f"{weights.name} is not a readable safetensors file ({exc})")
        return problems
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not tensors:
        problems.append(f"{weights.name} holds no tensors")
    extra = [k for k in tensors if "lora_" not in k]
    if extra:
        problems.append(f"{weights.name} holds non-LoRA tensors (e.g. {extra[0]!r}); vLLM "
                        "rejects them (save with save_embedding_layers=False)")
    if base_model is not None:
        problems.extend(_shape_problems(tensors, Path(base_model), r))
    return problems


def _shape_problems(tensors: dict[str, Any], base: Path, r: Any) -> list[str]:
    """LoRA shapes that do not fit the base model's hidden/intermediate sizes."""
    try:
        cfg = json.loads((base / "config.json").read_text())
    except (OSError, ValueError):
        return [f"cannot read the base model's config.json in {base}"]
    sizes = {cfg.get("hidden_size"), cfg.get("intermediate_size")}
    heads, kv = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads")
    if heads and kv and cfg.get("hidden_size"):
        sizes.add(cfg["hidden_size"] // heads * kv)  # k/v projections under GQA
    sizes.discard(None)
    layers = cfg.get("num_hidden_layers")
    problems = []
    for name, info in tensors.items():
        shape = info.get("shape") or []
        if len(shape) != 2:
            continue
        dim = shape[1] if ".lora_A." in name else shape[0] if ".lora_B." in name else None
        if dim is not None and dim not in sizes:
            problems.append(f"tensor {name} has shape {shape}, which does not fit the base model "
                            f"at {base} (sizes {sorted(sizes)}): was it trained on another model?")
            break
        if isinstance(r, int) and ((".lora_A." in name and shape[0] != r)
                                   or (".lora_B." in name and shape[1] != r)):
            problems.append(f"tensor {name} has shape {shape}, inconsistent with r={r}")
            break
        if layers is not None and ".layers." in name:
            idx = name.split(".layers.")[1].split(".")[0]
            if idx.isdigit() and int(idx) >= layers:
                problems.append(f"tensor {name} targets layer {idx}, but the base model has "
                                f"{layers} layers: it was trained on another model")
                break
    return problems


def validate_adapter_dir(path: str | Path, *, max_rank: int = 16,
                         base_model: str | Path | None = None) -> None:
    """Raise :class:`AdapterValidationError` listing every problem, or return quietly.

    Also runs ``langchain_ragtune.serving.client.validate_adapter`` when the serving
    package provides it.
    """
    problems = adapter_problems(path, max_rank=max_rank, base_model=base_model)
    if problems:
        raise AdapterValidationError(str(path), problems)
    serving_check = _serving_validator()
    if serving_check is not None:  # also checks values (NaN, never-trained weights)
        serving_check(str(path), base_model, max_rank)


def _serving_validator() -> Any:
    try:
        from langchain_ragtune.serving import client
    except Exception:  # not built yet, or its optional deps are missing
        return None
    return getattr(client, "validate_adapter", None)
