"""The admin client's wire handling (against httpx.MockTransport) and adapter validation."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from langchain_ragtune.errors import AdapterValidationError, EndpointUnreachableError, ServingError
from langchain_ragtune.serving.client import (
    AdapterLoadError,
    AsyncVLLMAdminClient,
    LoadLoRAAdapterRequest,
    ModelCard,
    VLLMAdminClient,
    find_adapter_problems,
    validate_adapter,
)
from langchain_ragtune.serving.launcher import free_port

URL = "http://vllm.test:8000"


class FakeVLLM:
    """Just enough of vLLM's runtime-LoRA endpoints to test the client's handling."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[str, str, dict]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        self.calls.append((request.method, request.url.path, body))
        path = request.url.path
        if path == "/health":
            return httpx.Response(200)
        if path == "/v1/models":
            data = [{"id": "base", "root": "/models/smol", "parent": None}]
            data += [{"id": n, "root": p, "parent": "base"} for n, p in self.loaded.items()]
            return httpx.Response(200, json={"object": "list", "data": data})
        if path == "/v1/load_lora_adapter":
            if body["lora_name"] in self.loaded:
                return httpx.Response(400, json={"error": {
                    "message": f"The lora adapter '{body['lora_name']}' has already been loaded.",
                    "type": "InvalidUserInput", "code": 400}})
            self.loaded[body["lora_name"]] = body["lora_path"]
            return httpx.Response(200, text="Success")
        if path == "/v1/unload_lora_adapter":
            if self.loaded.pop(body["lora_name"], None) is None:
                return httpx.Response(404, json={"error": {"message": "not found", "code": 404}})
            return httpx.Response(200, text="Success")
        if path == "/v1/chat/completions":
            if body["model"] != "base" and body["model"] not in self.loaded:
                return httpx.Response(404, json={"error": {"message": "model does not exist"}})
            return httpx.Response(200, json={
                "choices": [{"message": {"role": "assistant", "content": "Paris."},
                             "finish_reason": "stop"}],
                "usage": {"completion_tokens": 3}})
        return httpx.Response(404)


def test_load_list_unload_roundtrip() -> None:
    fake = FakeVLLM()
    with VLLMAdminClient(URL, transport=httpx.MockTransport(fake)) as client:
        assert client.health()
        client.load_adapter("ns-v1-abc", "/adapters/ns/v1")
        assert client.adapters() == {"ns-v1-abc": "/adapters/ns/v1"}
        assert [m.id for m in client.models()] == ["base", "ns-v1-abc"]
        answer = client.chat("ns-v1-abc", [{"role": "user", "content": "capital?"}])
        assert (answer.text, answer.completion_tokens) == ("Paris.", 3)
        assert client.unload_adapter("ns-v1-abc") is True
        assert client.unload_adapter("ns-v1-abc") is False  # already gone, missing_ok
        with pytest.raises(AdapterLoadError) as err:
            client.unload_adapter("ns-v1-abc", missing_ok=False)
        assert err.value.status_code == 404
    # The wire body never asks for an in-place reload.
    assert fake.calls[1][2] == {"lora_name": "ns-v1-abc", "lora_path": "/adapters/ns/v1"}


def test_duplicate_name_is_refused_with_the_fix() -> None:
    fake = FakeVLLM()
    with VLLMAdminClient(URL, transport=httpx.MockTransport(fake)) as client:
        client.load_adapter("a", "/p")
        with pytest.raises(AdapterLoadError, match="already been loaded.*new name") as err:
            client.load_adapter("a", "/p")
        assert err.value.status_code == 400 and err.value.endpoint == URL


def test_chat_with_unknown_model_says_load_first() -> None:
    with VLLMAdminClient(URL, transport=httpx.MockTransport(FakeVLLM())) as client:
        with pytest.raises(AdapterLoadError, match="does not serve model 'nope'"):
            client.chat("nope", [{"role": "user", "content": "hi"}])


def test_streamed_chat_stops_once_the_answer_is_there() -> None:
    """Canaries stream and stop at the expected text: the rest of the answer is not read."""
    pieces = ["Your", " dog", " is", " Biscuit", ".", " He", " likes", " walks", "."]
    events = [f"data: {json.dumps({'choices': [{'delta': {'content': p}}]})}\n\n"
              for p in pieces] + ["data: [DONE]\n\n"]
    sent = []

    def stream():
        for e in events:
            sent.append(e)
            yield e.encode()

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is True
        return httpx.Response(200, content=stream(),
                              headers={"content-type": "text/event-stream"})

    with VLLMAdminClient(URL, transport=httpx.MockTransport(handler)) as client:
        answer = client.chat("a", [{"role": "user", "content": "dog?"}], max_tokens=40,
                             stop_when=lambda text: "biscuit" in text.lower())
        assert answer.text == "Your dog is Biscuit" and answer.completion_tokens == 4
        assert len(sent) < len(events)  # it stopped reading
        whole = client.chat("a", [{"role": "user", "content": "dog?"}],
                            stop_when=lambda text: False)
        assert whole.text == "".join(pieces)
        with pytest.raises(AdapterLoadError, match="does not serve model 'nope'"):
            VLLMAdminClient(URL, transport=httpx.MockTransport(FakeVLLM())).chat(
                "nope", [{"role": "user", "content": "hi"}], stop_when=lambda text: True)


async def test_async_twin_behaves_the_same() -> None:
    fake = FakeVLLM()
    async with AsyncVLLMAdminClient(URL, transport=httpx.MockTransport(fake)) as client:
        assert await client.health()
        await client.load_adapter("x", "/px")
        assert await client.adapters() == {"x": "/px"}
        assert (await client.chat("x", [{"role": "user", "content": "?"}])).text == "Paris."
        assert await client.unload_adapter("x")
        assert await client.adapters() == {}


def test_unreachable_endpoint_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with VLLMAdminClient(url, timeout=2) as client:
        with pytest.raises(EndpointUnreachableError, match=f"{url} is unreachable.*ragtune serve"):
            client.models()


async def test_unreachable_endpoint_is_named_async() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncVLLMAdminClient(url, timeout=2) as client:
        with pytest.raises(EndpointUnreachableError, match=url):
            await client.health()


def test_clients_share_one_tls_context() -> None:
    """httpx would load the CA bundle for every client (about 30 ms of CPU here), which the
    publisher paid inside each swap; the admin clients reuse one verifying context."""
    import ssl

    from langchain_ragtune.serving.client import AsyncVLLMAdminClient, _tls_context

    clients = [VLLMAdminClient("http://127.0.0.1:1"), VLLMAdminClient("https://vllm.test:1"),
               AsyncVLLMAdminClient("http://127.0.0.1:1")]
    contexts = {id(c._http._transport._pool._ssl_context) for c in clients}
    for client in clients[:2]:
        client.close()
    assert contexts == {id(_tls_context())}
    assert _tls_context().verify_mode == ssl.CERT_REQUIRED and _tls_context().check_hostname


def test_wire_models() -> None:
    with pytest.raises(ValueError):
        LoadLoRAAdapterRequest(lora_name="a", lora_path="/p", load_inplace=True)
    with pytest.raises(ValueError):
        LoadLoRAAdapterRequest(lora_name="", lora_path="/p")
    card = ModelCard.model_validate({"id": "a", "root": "/p", "parent": "base", "x": 1})
    assert card.is_adapter and not ModelCard(id="base").is_adapter
    with pytest.raises(ServingError, match="not an http"):
        VLLMAdminClient("localhost:8000")


# --- validation ------------------------------------------------------------------------------

BASE_CONFIG = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128,
               "num_hidden_layers": 2, "vocab_size": 100}


def _base(tmp_path: Path, name: str = "SmolLM2-135M-Instruct", **changes) -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**BASE_CONFIG, **changes}))
    return folder


def _adapter(tmp_path: Path, base: Path, *, r: int = 8, hidden: int = 64, layers: int = 2,
             zero_b: bool = False, nan: bool = False, **cfg) -> Path:
    from safetensors.numpy import save_file

    folder = tmp_path / f"adapter-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "bias": "none",
              "target_modules": ["q_proj", "v_proj"], "modules_to_save": None,
              "use_dora": False, "base_model_name_or_path": str(base), **cfg}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    tensors = {}
    for i in range(layers):
        for mod, out in (("q_proj", hidden), ("v_proj", 32)):
            pre = f"base_model.model.model.layers.{i}.self_attn.{mod}"
            tensors[f"{pre}.lora_A.weight"] = rng.normal(size=(r, hidden)).astype(np.float32)
            b = np.zeros((out, r), np.float32) if zero_b else rng.normal(size=(out, r))
            tensors[f"{pre}.lora_B.weight"] = b.astype(np.float32)
    if nan:
        next(iter(tensors.values()))[0, 0] = np.nan
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def test_a_good_adapter_passes(tmp_path: Path) -> None:
    base = _base(tmp_path)
    assert validate_adapter(_adapter(tmp_path, base), base, 16) == []
    # A hub id naming the same model as the local folder is the same base.
    hub = _adapter(tmp_path, base, base_model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert validate_adapter(hub, base, 16) == []


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    base = _base(tmp_path)
    bad = _adapter(tmp_path, base, r=32, modules_to_save=["lm_head"], use_dora=True,
                   bias="all", init_lora_weights="pissa")
    with pytest.raises(AdapterValidationError) as err:
        validate_adapter(bad, base, 16)
    text = " | ".join(err.value.problems)
    assert len(err.value.problems) == 5, text
    for needle in ("modules_to_save", "DoRA", "bias='all'", "pissa", "rank 32 is above"):
        assert needle in text
    assert str(bad) in str(err.value)


def test_rank_pattern_counts_too(tmp_path: Path) -> None:
    base = _base(tmp_path)
    adapter = _adapter(tmp_path, base, r=8, rank_pattern={"q_proj": 64})
    assert any("rank 64" in p for p in find_adapter_problems(adapter, base, 16))


def test_another_base_model_is_rejected(tmp_path: Path) -> None:
    base = _base(tmp_path)
    other = _base(tmp_path, "Qwen-0.5B", hidden_size=96)
    by_name = _adapter(tmp_path, base, base_model_name_or_path="meta-llama/Llama-3-8B")
    assert any("trained on base model 'meta-llama/Llama-3-8B'" in p
               for p in find_adapter_problems(by_name, base))
    by_shape = _adapter(tmp_path, other, hidden=96)
    problems = find_adapter_problems(by_shape, base)
    assert any("size 96 where the base model's q_proj has 64" in p for p in problems), problems
    too_deep = _adapter(tmp_path, base, layers=3)
    assert any("layer 2" in p for p in find_adapter_problems(too_deep, base))


def test_corrupt_or_missing_weights_are_rejected(tmp_path: Path) -> None:
    base = _base(tmp_path)
    truncated = _adapter(tmp_path, base)
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert any("truncated" in p for p in find_adapter_problems(truncated, base))

    garbage = _adapter(tmp_path, base)
    (garbage / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
    assert any("corrupt header" in p for p in find_adapter_problems(garbage, base))

    missing = _adapter(tmp_path, base)
    (missing / "adapter_model.safetensors").unlink()
    (missing / "adapter_config.json").write_text("{not json")
    problems = find_adapter_problems(missing, base)
    assert any("not valid JSON" in p for p in problems)
    assert any("adapter_model.safetensors is missing" in p for p in problems)

    assert find_adapter_problems(tmp_path / "nowhere") == [
        f"adapter folder '{tmp_path / 'nowhere'}' does not exist"]


def test_nan_and_untrained_weights_are_rejected(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    base = _base(tmp_path)
    assert any("NaN" in p for p in find_adapter_problems(_adapter(tmp_path, base, nan=True)))
    assert any("never trained" in p
               for p in find_adapter_problems(_adapter(tmp_path, base, zero_b=True)))
    # check_values=False skips loading tensors (no torch needed).
    assert find_adapter_problems(_adapter(tmp_path, base, nan=True), check_values=False) == []
