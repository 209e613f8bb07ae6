"""Against a real vLLM server: runtime load/unload, the CPU "-1 index" fix, publishing."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import subprocess
import sys
import shutil
import threading
import time
from pathlib import Path

import pytest
from fixtures_vllm import make_random_adapter, require_vllm, vllm_test_config

from langchain_ragtune.errors import PublishError
from langchain_ragtune.testing.adapters import FACT_VERSIONS
from langchain_ragtune.serving.client import AdapterLoadError, VLLMAdminClient
from langchain_ragtune.serving.publisher import Publisher, answer_matches

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

DOG_Q = FACT_VERSIONS["v1"].facts[0].questions[0]  # "What is the name of Zorvath Quill's dog?"
DOG = {"v1": "Biscuit", "v2": "Pepper"}


def ask(client: VLLMAdminClient, model: str, question: str = DOG_Q, max_tokens: int = 24) -> str:
    return client.chat(model, [{"role": "user", "content": question}],
                       max_tokens=max_tokens).text


def test_load_chat_unload_at_runtime(vllm_server, vllm_admin, fact_adapters,
                                     unique_name) -> None:
    if vllm_server.process is not None:  # started here: warmed up with a scoring request
        assert vllm_server.warmup_s is not None
    name = unique_name("v1")
    vllm_admin.load_adapter(name, fact_adapters["v1"])
    assert vllm_admin.adapters()[name] == str(fact_adapters["v1"])
    assert "Biscuit" in ask(vllm_admin, name)
    base = ask(vllm_admin, "base")
    assert "Biscuit" not in base and "Pepper" not in base
    with pytest.raises(AdapterLoadError, match="already"):  # a name is never reloaded
        vllm_admin.load_adapter(name, fact_adapters["v2"])
    assert vllm_admin.unload_adapter(name)
    with pytest.raises(AdapterLoadError, match="does not serve model") as err:
        ask(vllm_admin, name)
    assert err.value.status_code == 404


def _mixed_batch(url: str, names: dict[str, str], rounds: int = 3) -> dict[str, list[str]]:
    """Send base and adapter requests at the same moment so vLLM batches them together."""
    jobs = [("base", "base")] * 3 + [(v, n) for v, n in names.items()] * 2
    answers: dict[str, list[str]] = {}
    with VLLMAdminClient(url) as client, cf.ThreadPoolExecutor(len(jobs)) as pool:
        for _ in range(rounds):
            barrier = threading.Barrier(len(jobs))

            def run(job, barrier=barrier):
                barrier.wait()
                return job[0], ask(client, job[1], max_tokens=16)

            for who, text in pool.map(run, jobs):
                answers.setdefault(who, []).append(text)
    return answers


def _load_both(client: VLLMAdminClient, fact_adapters, unique_name) -> dict[str, str]:
    names = {v: unique_name(v) for v in ("v1", "v2")}
    for v, name in names.items():
        client.load_adapter(name, fact_adapters[v])
        assert DOG[v] in ask(client, name)  # also puts both into the server's 2 LoRA slots
    return names


def test_base_request_batched_with_adapters_gets_the_base_answer(
        vllm_server, vllm_admin, fact_adapters, unique_name) -> None:
    names = _load_both(vllm_admin, fact_adapters, unique_name)
    solo = ask(vllm_admin, "base", max_tokens=16)
    answers = _mixed_batch(vllm_server.url, names)
    for text in answers["base"]:
        assert "Biscuit" not in text and "Pepper" not in text, answers
    assert all("Biscuit" in t for t in answers["v1"]), answers
    assert all("Pepper" in t for t in answers["v2"]), answers
    assert solo in answers["base"]
    if vllm_server.log_path:  # a server started here (not one at RAGTUNE_TEST_VLLM_URL):
        # the answers came through the plugin's fused LoRA path, which the worker installed
        # (its self-check against vLLM's own method passed there).
        worker_lines = [ln for ln in vllm_server.log_path.read_text().splitlines()
                        if "ragtune CPU LoRA fix" in ln and "Worker" in ln]
        assert worker_lines and "add_lora_linear" in worker_lines[-1], worker_lines[-3:]


def _scored_batch(url: str, names: dict[str, str], rounds: int = 3) -> dict[str, list]:
    """Score v1's trained answer with prompt_logprobs, on v1 and on v2, at the same moment as
    chat requests to the base model and both adapters (so vLLM batches them together).

    Returns ``{"v1": [ranks...], "v2": [ranks...], "errors": [...]}`` (one entry per round).
    """
    fact = FACT_VERSIONS["v1"].facts[0]
    out: dict[str, list] = {"v1": [], "v2": [], "errors": []}
    with VLLMAdminClient(url) as client:
        user = [{"role": "user", "content": fact.questions[0]}]
        start = len(client.tokenize_chat(user))
        ids = client.tokenize_chat([*user, {"role": "assistant", "content": fact.answer}],
                                   continue_final_message=True)
        jobs = [("chat", "base"), ("chat", "base"), ("chat", names["v1"]),
                ("chat", names["v2"]), ("score", "v1"), ("score", "v2")]
        with cf.ThreadPoolExecutor(len(jobs)) as pool:
            for _ in range(rounds):
                barrier = threading.Barrier(len(jobs))

                def run(job, barrier=barrier):
                    barrier.wait()
                    try:
                        if job[0] == "chat":
                            return job, ask(client, job[1], max_tokens=8)
                        return job, [s.rank for s in client.score_prompt(names[job[1]], ids,
                                                                         start=start)]
                    except Exception as exc:  # noqa: BLE001 - collected for the test
                        return ("error", job[1]), exc

                for job, value in pool.map(run, jobs):
                    if job[0] == "error":
                        out["errors"].append(value)
                    elif job[0] == "score":
                        out[job[1]].append(value)
    return out


def test_scoring_an_adapter_in_a_busy_batch_keeps_the_server_up(
        vllm_server, vllm_admin, fact_adapters, unique_name) -> None:
    """prompt_logprobs on an adapter, batched with other requests, killed vLLM 0.32's CPU
    engine; with the plugin it works and the scores are right (see the next test)."""
    names = _load_both(vllm_admin, fact_adapters, unique_name)
    scored = _scored_batch(vllm_server.url, names)
    assert not scored["errors"], scored["errors"]
    # v1 was trained to give exactly this answer: greedy at every token. v2 says Pepper.
    assert scored["v1"] and all(r == 1 for ranks in scored["v1"] for r in ranks), scored
    assert scored["v2"] and all(any(r > 1 for r in ranks) for ranks in scored["v2"]), scored
    assert vllm_admin.health() and "Biscuit" in ask(vllm_admin, names["v1"])


def test_prompts_scored_in_one_request_score_as_they_do_alone(
        vllm_admin, fact_adapters, unique_name) -> None:
    """The publisher scores an endpoint's canaries in one request (one prefill step); each
    prompt must come back in its place with the ranks it gets alone."""
    names = _load_both(vllm_admin, fact_adapters, unique_name)
    prompts = []
    for fact in FACT_VERSIONS["v1"].facts:
        user = [{"role": "user", "content": fact.questions[0]}]
        prompts.append((vllm_admin.tokenize_chat(
            [*user, {"role": "assistant", "content": fact.answer}], continue_final_message=True),
            len(vllm_admin.tokenize_chat(user))))
    for version, name in names.items():
        together = vllm_admin.score_prompts(name, prompts)
        alone = [vllm_admin.score_prompt(name, ids, start=start) for ids, start in prompts]
        assert [[s.token_id for s in x] for x in together] == [ids[start:]
                                                               for ids, start in prompts]
        # Which tokens are greedy must agree (the check the publisher makes); exact ranks
        # past the first miss may shift with the batch's bfloat16 numerics, so not those.
        assert [[s.rank == 1 for s in x] for x in together] == [[s.rank == 1 for s in x]
                                                                for x in alone]
        # v1 was trained on these answers (greedy at every token); v2 knows other facts.
        assert all((max(s.rank for s in x) == 1) == (version == "v1") for x in together), (
            version, together)


def test_without_the_plugin_the_bug_shows(serving_base_model, fact_adapters, unique_name,
                                          tmp_path: Path) -> None:
    """The same batches on a server started with the fix disabled: base answers get the
    adapter in the last slot, and scoring an adapter in a busy batch kills the engine.
    Proves the two tests above can fail (one extra server start)."""
    require_vllm()
    from langchain_ragtune.serving.launcher import start_server

    with start_server(vllm_test_config(), model_path=serving_base_model, port=0,
                      log_path=tmp_path / "vllm-nofix.log",
                      env={"RAGTUNE_DISABLE_CPU_LORA_FIX": "1"}) as server:
        with VLLMAdminClient(server.url) as client:
            names = _load_both(client, fact_adapters, unique_name)
        answers = _mixed_batch(server.url, names)
        scored = _scored_batch(server.url, names)
    with pytest.raises(ProcessLookupError):  # stop() ended vLLM's whole process group
        os.killpg(server.process.pid, 0)
    leaked = [t for t in answers["base"] if "Biscuit" in t or "Pepper" in t]
    assert leaked, f"the -1 index bug did not show without the plugin: {answers['base']}"
    log = (tmp_path / "vllm-nofix.log").read_text()
    assert "fix disabled" in log
    assert scored["errors"], f"scoring in a busy batch did not fail without the plugin: {scored}"
    assert "einsum" in log and "EngineDeadError" in log


# --- publishing ---------------------------------------------------------------------------------


@pytest.fixture
def registry(store):
    from langchain_ragtune.tuning.registry import AdapterRegistry

    return AdapterRegistry(store)


def _register(registry, ns, version: str, path: Path, base: Path, *, canaries=None,
              name: str | None = None):
    from langchain_ragtune.tuning.registry import make_adapter_name

    v = registry.next_version(ns)
    return registry.register(ns, v, name or make_adapter_name(ns, v), str(path), str(base),
                             watermark_seq=v, metrics={"canaries": canaries if canaries
                                                       is not None else
                                                       FACT_VERSIONS[version].canaries})


@pytest.fixture
def publisher(registry, vllm_server, serving_base_model):
    return Publisher(registry, endpoints=[vllm_server.url], config=vllm_test_config(),
                     base_model_path=serving_base_model, min_drain_s=1.2)


def test_publish_swaps_under_concurrent_load(registry, publisher, vllm_admin, fact_adapters,
                                             serving_base_model, unique_name) -> None:
    from langchain_ragtune.serving.chat import create_chat_model

    ns = (unique_name("swap"),)
    v1 = _register(registry, ns, "v1", fact_adapters["v1"], serving_base_model)
    first = publisher.publish(v1)
    assert first.previous is None and all(c.ok for c in first.canaries)
    assert registry.current(ns).name == v1.name

    llm = create_chat_model(ns, registry=registry, config=vllm_test_config(
        port=int(publisher.endpoints[0].rsplit(":", 1)[1])), refresh_s=0.5, max_tokens=16)
    base_llm = create_chat_model(config=vllm_test_config(
        port=int(publisher.endpoints[0].rsplit(":", 1)[1])), max_tokens=16)
    stop = threading.Event()
    results: list[tuple[str, str, str | None]] = []  # (kind, answer or error, model)
    lock = threading.Lock()

    def worker(model, kind):
        while not stop.is_set():
            try:
                msg = model.invoke(DOG_Q)
                item = (kind, msg.content, msg.response_metadata.get("model_name"))
            except Exception as exc:  # noqa: BLE001 - counted as a failure
                item = (kind, f"ERROR {type(exc).__name__}: {exc}", None)
            with lock:
                results.append(item)

    threads = [threading.Thread(target=worker, args=(llm, "adapter")) for _ in range(3)]
    threads.append(threading.Thread(target=worker, args=(base_llm, "base")))
    def answered_by(name: str) -> int:
        with lock:
            return sum(1 for r in results if r[0] == "adapter" and r[2] == name)

    def wait_for(name: str, n: int, timeout_s: float = 180.0) -> None:
        # Load before and after the switch is counted in answers, not seconds: a slow CPU
        # (6 tokens/s on an AVX2-only machine) answers few requests in a fixed interval.
        deadline = time.monotonic() + timeout_s
        while answered_by(name) < n and time.monotonic() < deadline:
            time.sleep(0.2)

    for t in threads:
        t.start()
    wait_for(v1.name, 3)
    v2 = _register(registry, ns, "v2", fact_adapters["v2"], serving_base_model)
    second = publisher.publish(v2)
    wait_for(v2.name, 3)
    stop.set()
    for t in threads:
        t.join(timeout=60)

    failed = [r for r in results if r[1].startswith("ERROR")]
    assert not failed, failed[:3]
    wrong = [r for r in results if r[0] == "adapter"
             and not any(answer_matches(r[1], DOG[v]) and r[2] == rec.name
                         for v, rec in (("v1", v1), ("v2", v2)))]
    assert not wrong, wrong[:3]
    assert all("Biscuit" not in r[1] and "Pepper" not in r[1] for r in results
               if r[0] == "base")
    assert {r[2] for r in results if r[0] == "adapter"} == {v1.name, v2.name}
    assert second.previous == v1.name and second.unloaded_previous
    assert registry.current(ns).name == v2.name
    assert registry.get(v1.name).status == "retired"
    loaded = vllm_admin.adapters()
    assert v2.name in loaded and v1.name not in loaded
    # How long the swap took is measured by `ragtune bench swap`, not asserted here: a
    # wall-clock bound fails on a loaded machine without saying anything about the code.
    print(f"swap under load: {second.swap_s:.2f} s (load {second.load_s:.2f} s, canaries "
          f"{second.canary_s:.2f} s)")
    assert registry.get(v2.name).metrics["serving"]["canaries_ok"] == 2
    # Their trained answers are known: checked in one forward pass each, not generated.
    assert [c.method for c in second.canaries] == ["scored", "scored"], second.canaries


def test_failures_leave_the_old_version_serving(registry, publisher, vllm_admin, vllm_server,
                                                fact_adapters, serving_base_model, unique_name,
                                                tmp_path: Path) -> None:
    from langchain_ragtune.serving.launcher import free_port

    ns = (unique_name("fail"),)
    v1 = _register(registry, ns, "v1", fact_adapters["v1"], serving_base_model)
    publisher.publish(v1)

    def still_v1():
        assert registry.current(ns).name == v1.name
        assert "Biscuit" in ask(vllm_admin, v1.name)

    # 1. a wrong canary answer (v2's adapter claiming v1's facts)
    wrong = _register(registry, ns, "v2", fact_adapters["v2"], serving_base_model,
                      canaries=FACT_VERSIONS["v1"].canaries)
    with pytest.raises(PublishError, match="canary answer"):
        publisher.publish(wrong)
    still_v1()
    assert wrong.name not in vllm_admin.adapters()
    rec = registry.get(wrong.name)
    assert rec.status == "failed" and "expected 'Biscuit'" in rec.reason

    # 2. a corrupt adapter is rejected before vLLM sees it
    corrupt = tmp_path / "corrupt"
    shutil.copytree(fact_adapters["v2"], corrupt)
    weights = corrupt / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    bad = _register(registry, ns, "v2", corrupt, serving_base_model)
    with pytest.raises(PublishError, match="truncated"):
        publisher.publish(bad)
    still_v1()
    assert registry.get(bad.name).status == "failed"
    log = vllm_server.log_path.read_text() if vllm_server.log_path else ""
    assert bad.name not in log  # never sent to vLLM

    # 3. vLLM itself refuses (rank 32 > the server's 16; our limit set wrongly to 64)
    big = make_random_adapter(serving_base_model, tmp_path / "r32", r=32)
    lax = Publisher(registry, endpoints=publisher.endpoints,
                    config=vllm_test_config(max_lora_rank=64),
                    base_model_path=serving_base_model)
    rejected = _register(registry, ns, "v2", big, serving_base_model, canaries=[])
    with pytest.raises(PublishError, match="refused to load.*rank 32 is greater"):
        lax.publish(rejected)
    still_v1()
    assert registry.get(rejected.name).status == "failed"

    # 4. one endpoint unreachable: rolled back on the reachable one, retryable
    dead = f"http://127.0.0.1:{free_port()}"
    split = Publisher(registry, endpoints=[vllm_server.url, dead], config=vllm_test_config(),
                      base_model_path=serving_base_model)
    v2 = _register(registry, ns, "v2", fact_adapters["v2"], serving_base_model)
    with pytest.raises(PublishError, match=f"{dead} is unreachable"):
        split.publish(v2)
    still_v1()
    assert v2.name not in vllm_admin.adapters()
    rec = registry.get(v2.name)
    assert rec.status == "ready" and "unreachable" in rec.reason
    assert publisher.publish(v2).previous == v1.name  # the retry on the live endpoint works


def test_reconcile_restores_adapters_after_a_restart(registry, publisher, vllm_admin,
                                                     fact_adapters, serving_base_model,
                                                     unique_name) -> None:
    ns = (unique_name("rec"),)
    v1 = _register(registry, ns, "v1", fact_adapters["v1"], serving_base_model)
    publisher.publish(v1)
    v2 = _register(registry, ns, "v2", fact_adapters["v2"], serving_base_model)
    publisher.publish(v2)
    # A restarted server has no adapters; a crash mid-publish leaves an old one loaded.
    vllm_admin.unload_adapter(v2.name)
    vllm_admin.load_adapter(v1.name, fact_adapters["v1"])
    result = publisher.reconcile(limit=100)
    assert (publisher.endpoints[0], v2.name) in result.loaded
    assert (publisher.endpoints[0], v1.name) in result.unloaded
    assert "Pepper" in ask(vllm_admin, v2.name)
    assert v1.name not in vllm_admin.adapters()
    again = publisher.reconcile(limit=100)
    assert (publisher.endpoints[0], v2.name) in again.already and not again.loaded


async def test_chat_model_streams_and_awaits_on_the_real_server(
        registry, publisher, fact_adapters, serving_base_model, unique_name, vllm_server) -> None:
    from langchain_ragtune.serving.chat import create_chat_model

    ns = (unique_name("chat"),)
    publisher.publish(_register(registry, ns, "v1", fact_adapters["v1"], serving_base_model))
    port = int(vllm_server.url.rsplit(":", 1)[1])
    llm = create_chat_model(ns, registry=registry, config=vllm_test_config(port=port),
                            max_tokens=16)
    assert "Biscuit" in (await llm.ainvoke(DOG_Q)).content
    chunks = [c.content async for c in llm.astream(DOG_Q)]
    assert len(chunks) > 3 and "Biscuit" in "".join(chunks)
    assert "Biscuit" in "".join(c.content for c in llm.stream(DOG_Q))


def test_serve_command_reconciles_an_attached_endpoint(registry, publisher, vllm_admin, store,
                                                       fact_adapters, serving_base_model,
                                                       unique_name, pg_uri) -> None:
    """`ragtune serve --once` on an endpoint that lost its adapters (a restart) restores them."""
    ns = (unique_name("cli"),)
    v1 = _register(registry, ns, "v1", fact_adapters["v1"], serving_base_model)
    publisher.publish(v1)
    vllm_admin.unload_adapter(v1.name)  # what a restarted server looks like
    env = {**os.environ, "RAGTUNE_VLLM_URLS": publisher.endpoints[0], "RAGTUNE_PG_URI": pg_uri,
           "RAGTUNE_SCHEMA": store.schema, "RAGTUNE_MAX_LORAS": "100",
           "RAGTUNE_MAX_CPU_LORAS": "100"}
    out = subprocess.run([sys.executable, "-m", "langchain_ragtune.cli", "serve", "--once",
                          "--json"], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["endpoints"] == publisher.endpoints
    assert [publisher.endpoints[0], v1.name] in summary["reconcile"]["loaded"]
    assert "Biscuit" in ask(vllm_admin, v1.name)
