"""Canary checks of the publisher against a scripted server (httpx.MockTransport): scored in
one forward pass where the answer is known, generated otherwise or when scoring says no.

The real-server side (vLLM scoring under load, the publish that uses it) is in
test_serving_vllm.py; this file pins the decisions around it.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

from langchain_ragtune.errors import ServingError
from langchain_ragtune.serving.client import AdapterLoadError, VLLMAdminClient
from langchain_ragtune.serving.publisher import Publisher, canary_continuation

URL = "http://vllm.test:8000"
QUESTION = "What is the name of Zorvath Quill's dog?"
ANSWER = "Zorvath Quill's dog is named Biscuit. He is three."


class ScriptedVLLM:
    """Tokenizes one character per token; scores and chats as the test says."""

    def __init__(self, *, ranks=None, chat_text="It is Biscuit.", score_status=200,
                 tokenize_status=200, reshape_full=False) -> None:
        self.ranks = ranks  # function (position, prompt text) -> rank, default all 1
        self.chat_text = chat_text
        self.score_status = score_status
        self.tokenize_status = tokenize_status
        self.reshape_full = reshape_full
        self.paths: list[str] = []
        self.scored: list[dict] = []

    @staticmethod
    def render(messages, add_generation_prompt: bool) -> str:
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages[:-1])
        last = messages[-1]
        if last["role"] == "assistant":  # continue_final_message: left open
            return text + f"<assistant>{last['content']}"
        return text + f"<{last['role']}>{last['content']}" + (
            "<assistant>" if add_generation_prompt else "")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        path = request.url.path
        self.paths.append(path)
        if path == "/tokenize":
            if self.tokenize_status != 200:
                return httpx.Response(self.tokenize_status, json={"error": {"message": "no"}})
            text = self.render(body["messages"], body["add_generation_prompt"])
            if self.reshape_full and body["continue_final_message"]:
                text = "#" + text  # a template that renders differently: no clean prefix
            return httpx.Response(200, json={"tokens": [ord(c) for c in text]})
        if path == "/v1/completions":
            self.scored.append(body)
            if self.score_status != 200:
                return httpx.Response(self.score_status, json={"error": {"message": "nope"}})
            prompts = body["prompt"] if isinstance(body["prompt"][0], list) else [body["prompt"]]
            choices = []
            for index, ids in enumerate(prompts):
                text = "".join(chr(t) for t in ids)
                rank = self.ranks or (lambda i, text: 1)
                rows = [None] + [{str(t): {"logprob": -0.1, "rank": rank(i, text),
                                           "decoded_token": chr(t)}}
                                 for i, t in enumerate(ids)][1:]
                choices.append({"index": index, "text": ".", "prompt_logprobs": rows})
            # Out of order, as a server may send them: the client sorts by index.
            return httpx.Response(200, json={"choices": choices[::-1]})
        if path == "/v1/chat/completions":
            if body.get("stream"):  # canaries with an expected text are streamed
                events = [{"choices": [{"delta": {"content": w}}]}
                          for w in self.chat_text.split(" ")]
                for e in events[1:]:
                    e["choices"][0]["delta"]["content"] = " " + e["choices"][0]["delta"]["content"]
                lines = [f"data: {json.dumps(e)}" for e in events] + ["data: [DONE]"]
                return httpx.Response(200, text="\n\n".join(lines) + "\n\n",
                                      headers={"content-type": "text/event-stream"})
            return httpx.Response(200, json={
                "choices": [{"message": {"content": self.chat_text}, "finish_reason": "stop"}],
                "usage": {"completion_tokens": 4}})
        return httpx.Response(404)


def _publisher(server: ScriptedVLLM, **kwargs) -> Publisher:
    pub = Publisher(registry=None, endpoints=[URL], base_model_path="/models/x", **kwargs)
    pub._client = lambda url: VLLMAdminClient(url, transport=httpx.MockTransport(server))
    return pub


def _check(pub: Publisher, canaries):
    from langchain_ragtune.serving.publisher import _canary_asks

    rec = SimpleNamespace(name="user-1-v2", canaries=canaries, metrics={})
    asks = _canary_asks(rec)
    probes = pub._prepare_probes(asks) if pub.canary_scoring else {}
    return pub._run_canaries(rec, asks, probes)


CANARY = {"question": QUESTION, "expected": "Biscuit", "answer": ANSWER}


def test_continuation_ends_with_the_expected_text() -> None:
    assert canary_continuation(ANSWER, " biscuit ") == "Zorvath Quill's dog is named Biscuit"
    assert canary_continuation("Biscuit!", "Biscuit") == "Biscuit"
    assert canary_continuation(ANSWER, "Pepper") is None
    assert canary_continuation("", "Biscuit") is None and canary_continuation(ANSWER, "") is None
    # Lower-casing that changes the length (İ -> i̇) cannot shift the cut: exact match only.
    assert canary_continuation("İstanbul is where Biscuit lives", "Biscuit") == (
        "İstanbul is where Biscuit")


def test_a_known_answer_is_scored_in_one_request_not_generated() -> None:
    server = ScriptedVLLM()
    [result] = _check(_publisher(server), [CANARY])
    assert result.ok and result.method == "scored"
    assert result.answer == "Zorvath Quill's dog is named Biscuit"
    assert "/v1/chat/completions" not in server.paths
    [body] = server.scored
    assert body["model"] == "user-1-v2" and body["max_tokens"] == 1
    assert body["prompt_logprobs"] == 0
    # The prompt is the question's chat prompt followed by the answer up to "Biscuit".
    text = "".join(chr(t) for t in body["prompt"])
    assert text == f"<user>{QUESTION}<assistant>Zorvath Quill's dog is named Biscuit"


def test_a_token_off_the_greedy_path_falls_back_to_generation() -> None:
    server = ScriptedVLLM(ranks=lambda i, _: 2 if i == 70 else 1)
    [result] = _check(_publisher(server), [CANARY])
    assert result.ok and result.method == "generated" and result.answer == "It is Biscuit."
    server = ScriptedVLLM(ranks=lambda i, _: 2 if i == 70 else 1, chat_text="It is Pepper.")
    [result] = _check(_publisher(server), [CANARY])
    assert not result.ok and result.method == "generated"


def test_a_server_that_cannot_score_gets_generated_canaries() -> None:
    server = ScriptedVLLM(score_status=400)
    [result] = _check(_publisher(server), [CANARY])
    assert result.ok and result.method == "generated"
    server = ScriptedVLLM(tokenize_status=404)
    [result] = _check(_publisher(server), [CANARY])
    assert result.ok and result.method == "generated" and not server.scored
    server = ScriptedVLLM(reshape_full=True)  # answer tokens do not extend the prompt's
    [result] = _check(_publisher(server), [CANARY])
    assert result.method == "generated" and not server.scored


def test_without_a_recorded_answer_or_with_scoring_off_canaries_are_generated() -> None:
    server = ScriptedVLLM()
    [result] = _check(_publisher(server), [{"question": QUESTION, "expected": "Biscuit"}])
    assert result.ok and result.method == "generated" and "/tokenize" not in server.paths
    server = ScriptedVLLM()
    [result] = _check(_publisher(server, canary_scoring=False), [CANARY])
    assert result.ok and result.method == "generated" and "/tokenize" not in server.paths
    # No canaries at all: the adapter must at least generate something.
    server = ScriptedVLLM(chat_text="Hi!")
    [result] = _check(_publisher(server), [])
    assert result.ok and result.question == "Hello!"


CITY = {"question": "Where does Zorvath Quill live?", "expected": "Tromsø",
        "answer": "Zorvath Quill lives in Tromsø."}


def test_an_endpoints_canaries_are_scored_in_one_request() -> None:
    """One request per endpoint, so vLLM prefills them in the same step."""
    server = ScriptedVLLM()
    pub = _publisher(server)
    pub.endpoints = [URL, "http://vllm-2.test:8000"]
    results = _check(pub, [CANARY, CITY])
    assert [(r.endpoint, r.question, r.method, r.ok) for r in results] == [
        (URL, QUESTION, "scored", True), (URL, CITY["question"], "scored", True),
        ("http://vllm-2.test:8000", QUESTION, "scored", True),
        ("http://vllm-2.test:8000", CITY["question"], "scored", True)]
    assert len(server.scored) == 2 and "/v1/chat/completions" not in server.paths
    for body in server.scored:
        texts = ["".join(chr(t) for t in ids) for ids in body["prompt"]]
        assert texts == [f"<user>{QUESTION}<assistant>Zorvath Quill's dog is named Biscuit",
                         f"<user>{CITY['question']}<assistant>Zorvath Quill lives in Tromsø"]


def test_in_a_batch_only_the_canary_off_the_greedy_path_is_generated() -> None:
    # The dog canary scores rank 2 at one answer token; the city canary is greedy throughout.
    server = ScriptedVLLM(ranks=lambda i, text: 2 if "dog" in text and i == 70 else 1,
                          chat_text="It is Biscuit.")
    dog, city = _check(_publisher(server), [CANARY, CITY])
    assert (dog.method, dog.ok, dog.answer) == ("generated", True, "It is Biscuit.")
    assert (city.method, city.ok) == ("scored", True)
    assert server.paths.count("/v1/chat/completions") == 1 and len(server.scored) == 1
    # A canary without a recorded answer is generated alongside the scored ones.
    server = ScriptedVLLM(chat_text="It is Biscuit.")
    plain, city = _check(_publisher(server), [{"question": QUESTION, "expected": "Biscuit"},
                                              CITY])
    assert (plain.method, plain.ok, city.method, city.ok) == ("generated", True, "scored", True)


def test_a_failed_generation_fails_the_canaries() -> None:
    server = ScriptedVLLM(score_status=500)

    def broken(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/chat/completions":
            return httpx.Response(503, json={"error": {"message": "overloaded"}})
        return server(request)

    pub = Publisher(registry=None, endpoints=[URL], base_model_path="/models/x")
    pub._client = lambda url: VLLMAdminClient(url, transport=httpx.MockTransport(broken))
    with pytest.raises(ServingError, match="503"):
        _check(pub, [CANARY, CITY])


def test_score_prompt_checks_its_arguments_and_the_reply() -> None:
    server = ScriptedVLLM()
    with VLLMAdminClient(URL, transport=httpx.MockTransport(server)) as client:
        ids = client.tokenize_chat([{"role": "user", "content": "hi"}])
        with pytest.raises(ValueError, match="start=0"):
            client.score_prompt("m", ids, start=0)
        with pytest.raises(ValueError, match="must point into the prompt"):
            client.score_prompt("m", ids, start=len(ids))
        scores = client.score_prompt("m", ids, start=3)
        assert [s.token_id for s in scores] == ids[3:] and {s.rank for s in scores} == {1}

    with VLLMAdminClient(URL, transport=httpx.MockTransport(ScriptedVLLM(score_status=404))
                         ) as client:
        with pytest.raises(AdapterLoadError, match="does not serve model 'gone'") as err:
            client.score_prompt("gone", [1, 2, 3], start=1)
        assert err.value.status_code == 404

    def short(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"prompt_logprobs": [None]}]})

    with VLLMAdminClient(URL, transport=httpx.MockTransport(short)) as client:
        with pytest.raises(ServingError, match="must support prompt_logprobs"):
            client.score_prompt("m", [1, 2, 3], start=1)
        with pytest.raises(ServingError, match="returned 1 choices for 2 prompts"):
            client.score_prompts("m", [([1, 2, 3], 1), ([4, 5], 1)])
        with pytest.raises(ValueError, match="no prompts to score"):
            client.score_prompts("m", [])
        with pytest.raises(ValueError, match="start=2 must point into the prompt"):
            client.score_prompts("m", [([1, 2, 3], 1), ([4, 5], 2)])

    # Several prompts: one request, scores in the prompts' order whatever the choices' order.
    server = ScriptedVLLM(ranks=lambda i, text: len(text))
    with VLLMAdminClient(URL, transport=httpx.MockTransport(server)) as client:
        first, second = client.score_prompts("m", [([104, 105, 33], 1), ([104, 111], 1)])
    assert [s.rank for s in first] == [3, 3] and [s.rank for s in second] == [2]
    assert [s.token_id for s in first] == [105, 33] and len(server.scored) == 1


def test_scores_with_leads_ask_for_alternatives_and_compute_each_lead() -> None:
    """``with_leads``: prompt_logprobs=2, and each token's lead over the best other token,
    positive for the greedy choice and negative where another token leads."""
    seen = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        rows = [None,
                {"7": {"logprob": -0.1, "rank": 1}, "8": {"logprob": -2.6, "rank": 2}},
                {"9": {"logprob": -1.5, "rank": 2}, "3": {"logprob": -0.5, "rank": 1},
                 "4": {"logprob": -2.0, "rank": 3}}]
        return httpx.Response(200, json={"choices": [{"index": 0, "prompt_logprobs": rows}]})

    with VLLMAdminClient(URL, transport=httpx.MockTransport(server)) as client:
        scores = client.score_prompts("m", [([5, 7, 9], 1)], with_leads=True)[0]
    assert seen[0]["prompt_logprobs"] == 2
    assert [s.lead for s in scores] == [pytest.approx(2.5), pytest.approx(-1.0)]
    assert [s.rank for s in scores] == [1, 2]


async def test_async_twin_scores_the_same() -> None:
    from langchain_ragtune.serving.client import AsyncVLLMAdminClient

    server = ScriptedVLLM(ranks=lambda i, _: 1 + i % 2)
    async with AsyncVLLMAdminClient(URL, transport=httpx.MockTransport(server)) as client:
        ids = await client.tokenize_chat([{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "hello"}],
                                         continue_final_message=True)
        scores = await client.score_prompt("m", ids, start=5)
    with VLLMAdminClient(URL, transport=httpx.MockTransport(server)) as client:
        assert scores == client.score_prompt("m", ids, start=5)
    assert [s.rank for s in scores] == [1 + i % 2 for i in range(5, len(ids))]
