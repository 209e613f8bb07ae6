"""The vLLM command line and environment (pure), and attaching to existing endpoints."""

from __future__ import annotations

import pytest

from langchain_ragtune.config import ServeConfig
from langchain_ragtune.errors import ConfigError, ServingError
from langchain_ragtune.serving.launcher import (
    build_command,
    build_env,
    free_port,
    serving_endpoints,
    start_server,
)


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_command_carries_the_limits_from_config() -> None:
    config = ServeConfig(port=9000, max_loras=3, max_lora_rank=16, max_cpu_loras=6,
                         max_model_len=1024, served_model_name="smol")
    cmd = build_command(config, "/m", python="py")
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert "--enable-lora" in cmd
    assert (_arg(cmd, "--model"), _arg(cmd, "--served-model-name")) == ("/m", "smol")
    assert (_arg(cmd, "--host"), _arg(cmd, "--port")) == ("127.0.0.1", "9000")
    assert (_arg(cmd, "--max-loras"), _arg(cmd, "--max-cpu-loras")) == ("3", "6")
    assert (_arg(cmd, "--max-lora-rank"), _arg(cmd, "--max-model-len")) == ("16", "1024")
    assert _arg(build_command(config, "/m", port=1234), "--port") == "1234"


def test_rank_rounds_up_to_a_value_vllm_accepts() -> None:
    assert _arg(build_command(ServeConfig(max_lora_rank=4), "/m"), "--max-lora-rank") == "8"
    assert _arg(build_command(ServeConfig(max_lora_rank=33), "/m"), "--max-lora-rank") == "64"
    with pytest.raises(ConfigError, match="max_lora_rank=600"):
        build_command(ServeConfig(max_lora_rank=600), "/m")


def test_environment_enables_runtime_lora_and_stays_offline() -> None:
    env = build_env(ServeConfig(kv_cache_gib=3), base={"PATH": "/bin", "HF_HUB_OFFLINE": "0"})
    assert env["PATH"] == "/bin"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    env = build_env(ServeConfig(), base={}, RAGTUNE_DISABLE_CPU_LORA_FIX="1")
    assert env["RAGTUNE_DISABLE_CPU_LORA_FIX"] == "1"


def test_attach_uses_configured_urls_and_starts_nothing() -> None:
    config = ServeConfig(vllm_urls=("http://10.0.0.5:8000/", "http://10.0.0.6:8000"))
    with serving_endpoints(config) as urls:
        assert urls == ["http://10.0.0.5:8000", "http://10.0.0.6:8000"]


def test_taken_port_is_refused_with_the_fix(tmp_path) -> None:
    import socket

    pytest.importorskip("vllm", reason="vLLM is not installed")
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        with pytest.raises(ServingError, match=f"port {port} .* RAGTUNE_VLLM_URLS"):
            start_server(ServeConfig(port=port), model_path=tmp_path, log_path=tmp_path / "l")
