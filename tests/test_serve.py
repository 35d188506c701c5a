"""``jupyter-stream serve`` as a subprocess on a real uvicorn, read by real clients (httpx, httpx-sse),
against the loopback model server: SSE events, prediction, 422s before any LM call, 401, 503, errors as
events, and a client that hangs up closing the LM request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import httpx
import pytest

pytest.importorskip("uvicorn")
httpx_sse = pytest.importorskip("httpx_sse")

from _served import Served, free_port  # noqa: E402
from jupyter_stream.demo import Fault, Reply  # noqa: E402

REPLY = "[[ ## answer ## ]]\nParis is the capital.\n\n[[ ## completed ## ]]"


@pytest.fixture(scope="module")
def served(server):
    app = Served("question -> answer", "--base-url", server.url, "--model", "served-model",
                 "--max-concurrency", "2")
    yield app
    log = app.stop()
    assert "sk-" not in log


def _events(response) -> list[dict]:
    out = []
    for sse in httpx_sse.EventSource(response).iter_sse():
        out.append("[DONE]" if sse.data == "[DONE]" else json.loads(sse.data))
    return out


def _joined(events) -> str:
    return "".join(e["stream_response"]["chunk"] for e in events if isinstance(e, dict) and "stream_response" in e)


def test_post_stream_sends_every_chunk_then_the_prediction_then_done(served, server):
    server.reset()
    server.script(REPLY)
    with httpx.Client(timeout=30) as client, client.stream("POST", served.url + "/stream",
                                                              json={"question": "Capital?"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response)
    assert events[-1] == "[DONE]"
    assert events[-2] == {"prediction": {"answer": "Paris is the capital."}, "model": "served-model"}
    assert _joined(events) == "Paris is the capital."
    assert server.requests[-1]["model"] == "served-model"


def test_get_stream_serves_a_browser_event_source(served, server):
    server.reset()
    server.script(REPLY)
    with httpx.Client(timeout=30) as client, client.stream("GET", served.url + "/stream",
                                                              params={"question": "Capital, by GET?"}) as response:
        events = _events(response)
    assert _joined(events) == "Paris is the capital." and events[-1] == "[DONE]", events


def test_post_predict_returns_the_prediction(served, server):
    server.reset()
    server.script(REPLY)
    response = httpx.post(served.url + "/predict", json={"question": "Capital, predicted?"}, timeout=30)
    assert response.status_code == 200
    assert response.json() == {"prediction": {"answer": "Paris is the capital."}, "model": "served-model"}


@pytest.mark.parametrize("body, message", [
    ({}, "inputs: missing ['question']; this program takes ['question']"),
    ({"question": "q", "extra": 1}, "inputs: unknown ['extra']; this program takes ['question']"),
    ([1, 2], "the body must be a JSON object of the inputs ['question']"),
])
def test_bad_inputs_are_422_with_one_message_and_no_lm_call(served, server, body, message):
    server.reset()
    response = httpx.post(served.url + "/stream", json=body, timeout=30)
    assert response.status_code == 422
    assert response.json() == {"error": message}
    bad_json = httpx.post(served.url + "/predict", content=b"{nope", timeout=30)
    assert bad_json.status_code == 422 and "the body is not JSON" in bad_json.json()["error"]
    assert server.requests == []


def test_a_failed_call_ends_with_an_error_event_and_done(served, server):
    server.reset()
    server.script(Fault("status", status=400, body={"error": {"message": "bad request", "type": "invalid_request_error"}}))
    with httpx.Client(timeout=30) as client, client.stream("POST", served.url + "/stream",
                                                              json={"question": "failing"}) as response:
        events = _events(response)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["type"] == "LMError" and "HTTP 400: bad request" in events[-2]["error"]["message"]


def test_a_client_that_hangs_up_closes_the_lm_request(served, server):
    server.reset()
    server.script(Reply(content="[[ ## answer ## ]]\n" + "word " * 2000, token_rate=200))
    with httpx.Client(timeout=30) as client, client.stream("POST", served.url + "/stream",
                                                              json={"question": "hang up"}) as response:
        for line in response.iter_lines():
            if "stream_response" in line:
                break
    assert server.wait_idle(5.0)
    assert server.stream_closed_early == 1


def test_beyond_max_concurrency_is_503_with_retry_after(served, server):
    server.reset()
    slow = Reply(content="[[ ## answer ## ]]\n" + "word " * 300, token_rate=200)
    server.script(slow, slow)
    started = threading.Barrier(3)
    done = []

    def one(i: int) -> None:
        with httpx.Client(timeout=30) as client, client.stream("POST", served.url + "/stream",
                                                                  json={"question": f"slow {i}"}) as response:
            lines = response.iter_lines()
            next(line for line in lines if "stream_response" in line)
            started.wait(10)
            done.append(sum(1 for _ in lines))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    started.wait(10)
    busy = httpx.post(served.url + "/stream", json={"question": "one too many"}, timeout=30)
    for t in threads:
        t.join(30)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert len(done) == 2


def test_the_page_has_a_field_per_input_and_renders_text_only(served):
    page = httpx.get(served.url + "/", timeout=30)
    assert page.status_code == 200
    assert '<textarea name="question"' in page.text
    assert "innerHTML" not in page.text and "appendData" in page.text


def test_token_env_requires_the_bearer_token(server):
    app = Served("question -> answer", "--base-url", server.url, "--model", "m", "--token-env", "SERVE_TEST_TOKEN",
                 env={"SERVE_TEST_TOKEN": "tok-123"})
    try:
        server.reset()
        server.script(REPLY)
        assert httpx.post(app.url + "/predict", json={"question": "q"}, timeout=30).status_code == 401
        ok = httpx.post(app.url + "/predict", json={"question": "with token"}, headers={"Authorization": "Bearer tok-123"},
                        timeout=30)
        assert ok.status_code == 200 and ok.json()["prediction"]["answer"] == "Paris is the capital."
        assert httpx.get(app.url + "/healthz", timeout=30).status_code == 200
    finally:
        assert "tok-123" not in app.stop()


def test_serve_without_a_model_refuses_in_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    proc = subprocess.run([sys.executable, "-m", "jupyter_stream", "serve", "question -> answer", "--port",
                           str(free_port())], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "jupyter-stream: no model to serve: pass --model NAME (with --base-url for a local server), configure one "
        "in your module, or --demo for the built-in demo LM"
    )


def test_on_the_demo_lm_the_stream_says_so_first():
    app = Served("question -> answer", "--demo", env={"JUPYTER_STREAM_DEMO_RATE": "0"})
    try:
        with httpx.Client(timeout=30) as client, client.stream("POST", app.url + "/stream",
                                                                  json={"question": "Hi?"}) as response:
            events = _events(response)
        assert events[0] == {"status_message": {"message": "no model configured: the built-in demo LM is answering "
                                                           "(its replies are made up)"}}
        assert "Hi?" in events[-2]["prediction"]["answer"] and events[-1] == "[DONE]"
        assert events[-2]["model"] == "demo LM"
    finally:
        app.stop()


def test_with_a_model_no_demo_notice(served, server):
    server.reset()
    server.script(REPLY)
    with httpx.Client(timeout=30) as client, client.stream("POST", served.url + "/stream",
                                                              json={"question": "no notice?"}) as response:
        events = _events(response)
    assert not any("status_message" in e for e in events if isinstance(e, dict))


def test_cache_on_by_default_no_cache_asks_every_time_with_the_temperature(served, server):
    server.reset()
    server.script(REPLY, REPLY)
    for _ in range(2):
        assert httpx.post(served.url + "/predict", json={"question": "cached?"}, timeout=30).status_code == 200
    assert len(server.requests) == 1  # the second identical request was answered from the cache
    app = Served("question -> answer", "--base-url", server.url, "--no-cache", "--temperature", "0.3")
    try:
        server.reset()
        server.script(REPLY, REPLY)
        for _ in range(2):
            reply = httpx.post(app.url + "/predict", json={"question": "cached?"}, timeout=30)
            assert reply.json() == {"prediction": {"answer": "Paris is the capital."}, "model": "demo"}
        assert [(r["model"], r["temperature"]) for r in server.requests] == [("demo", 0.3), ("demo", 0.3)]
    finally:
        log = app.stop()
    assert "model 'demo', the first of the 1 the server lists" in log


async def test_a_hundred_concurrent_sse_clients_each_get_their_own_text(server):
    """100 EventSource-style clients at once (httpx-sse): each stream is whole, ends with [DONE], and holds
    the answer to its own question (the demo server's replies quote the question)."""
    import asyncio

    app = Served("question -> answer", "--base-url", server.url, "--model", "demo", "--no-cache",
                 "--max-concurrency", "100")
    server.reset()

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, list]:
        async with httpx_sse.aconnect_sse(client, "POST", app.url + "/stream",
                                          json={"question": f"Question number {i}?"}) as source:
            events = [("[DONE]" if e.data == "[DONE]" else json.loads(e.data)) async for e in source.aiter_sse()]
        return i, events

    try:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            results = await asyncio.gather(*(one(client, i) for i in range(100)))
    finally:
        app.stop()
    assert len(server.requests) == 100
    for i, events in results:
        assert events[-1] == "[DONE]", (i, events[-3:])
        answer = events[-2]["prediction"]["answer"]
        assert f"Question number {i}?" in answer and _joined(events) == answer, (i, answer)
