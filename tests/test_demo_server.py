"""The demo LM server, driven by the real ``openai`` client over real loopback HTTP."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import openai
import pydantic
import pytest
from openai import AsyncOpenAI

from jupyter_stream.adapters import get_adapter
from jupyter_stream.demo import DemoServer, Fault, Reply, auto_reply, chunk_text, tokenize
from jupyter_stream._signatures import InputField, OutputField, Signature

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_NAMES = ["gpt4o_mini_chat_qa", "gemini_chat_qa", "gpt4o_mini_json_qa", "vllm_reasoning_qa",
                 "chat_no_completed"]
MSGS = [{"role": "user", "content": "hi"}]

SYSTEM_BLOCK = """Your input fields are:
1. `question` (str)
2. `context` (str): some description
Your output fields are:
1. `reasoning` (str)
2. `answer` (int): some description
3. `tags` (list[str])
4. `label` (Literal['pos', 'neg'])
5. `ok` (bool)
"""
USER = "[[ ## question ## ]]\nWhat is the meaning of life?\n\n[[ ## context ## ]]\nA famous book.\n\n" \
       "Respond with the corresponding output fields, starting with the field `[[ ## reasoning ## ]]`."


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture
def server():
    with DemoServer() as s:
        yield s


@pytest.fixture
async def client(server):
    c = AsyncOpenAI(base_url=server.url, api_key="demo", max_retries=0)
    yield c
    await c.close()


async def collect(stream) -> tuple[list[str], list[str], list]:
    """(content deltas, reasoning deltas, all chunks) of an openai chat stream."""
    content, reasoning, chunks = [], [], []
    async for chunk in stream:
        chunks.append(chunk)
        for choice in chunk.choices:
            if choice.delta.content:
                content.append(choice.delta.content)
            r = (choice.delta.model_extra or {}).get("reasoning_content")
            if r:
                reasoning.append(r)
    return content, reasoning, chunks


async def stream_text(client: AsyncOpenAI, **kw) -> str:
    stream = await client.chat.completions.create(model="demo", messages=kw.pop("messages", MSGS), stream=True, **kw)
    content, _, _ = await collect(stream)
    return "".join(content)


# -- tokenizer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "", "Hello, wonderful world!\n", "  two  spaces\tand tabs \n\n", "[[ ## answer ## ]]\n42",
    "Unicode: café, naïve, 東京, emoji 🎉.", 'JSON {"a": "b\\n"} 1234567', "supercalifragilistic",
])
def test_tokenizer_round_trips_and_pieces_are_small(text):
    toks = tokenize(text)
    assert "".join(toks) == text
    assert all(toks)
    assert all(len(t.lstrip(" ")) <= 7 for t in toks if not t.isspace())


def test_tokenizer_cuts_long_words_keeps_newlines_and_punctuation_separate():
    toks = tokenize("The extraordinary answer.\n\nDone")
    assert toks[:2] == ["The", " extr"]
    assert all(len(t) <= 4 for t in toks[2:5])
    assert "." in toks and toks.count("\n") == 2 and toks[-1] == "Done"


def test_chunk_chars_gives_gemini_sized_pieces():
    text = "word " * 100
    pieces = chunk_text(text, 50)
    assert "".join(pieces) == text
    assert all(50 <= len(p) <= 56 for p in pieces[:-1])


# -- streaming ---------------------------------------------------------------------------------------


async def test_streamed_scripted_string_joins_to_its_text(server, client):
    text = "Paris is the capital of France.\nIt has been since 987 AD — très ancien!"
    server.script(text)
    stream = await client.chat.completions.create(model="demo", messages=MSGS, stream=True)
    content, _, chunks = await collect(stream)
    assert "".join(content) == text
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].choices[0].delta.content is None
    assert all(c.object == "chat.completion.chunk" and c.id.startswith("chatcmpl-") for c in chunks)
    assert server.requests[-1]["messages"] == MSGS and server.requests[-1]["stream"] is True


async def test_tokenizer_gives_many_small_deltas_over_the_wire(server, client):
    text = "The quick brown fox jumps over the lazy dog, then naps. " * 5
    server.script(text)
    stream = await client.chat.completions.create(model="demo", messages=MSGS, stream=True)
    content, _, _ = await collect(stream)
    assert "".join(content) == text
    assert len(content) >= 60
    assert max(len(c) for c in content) <= 7


async def test_reply_with_exact_chunks_and_chunk_chars(server, client):
    server.script(Reply(chunks=["Pa", "ris", "", " !"]), Reply(content="x" * 10 + " y" * 40, chunk_chars=20))
    stream = await client.chat.completions.create(model="demo", messages=MSGS, stream=True)
    content, _, _ = await collect(stream)
    assert content == ["Pa", "ris", " !"]  # the empty delta is sent but carries no text
    stream = await client.chat.completions.create(model="demo", messages=MSGS, stream=True)
    content, _, _ = await collect(stream)
    assert "".join(content) == "x" * 10 + " y" * 40 and len(content) == 5


@pytest.mark.parametrize("name", FIXTURE_NAMES)
async def test_fixture_is_replayed_verbatim(server, client, name):
    fx = load_fixture(name)
    server.script(fx)  # the fixture dict; its "chunks" go out as they are
    async with client.chat.completions.with_streaming_response.create(
        model="demo", messages=MSGS, stream=True
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert [json.loads(line[len("data: "):]) for line in lines[:-1]] == fx["chunks"]

    server.script(fx)  # and through the typed client, the text adds up
    stream = await client.chat.completions.create(model="demo", messages=MSGS, stream=True)
    content, reasoning, _ = await collect(stream)
    assert "".join(content) == fx["reply"]
    assert "".join(reasoning) == fx["reasoning"]


def test_fixture_files_are_consistent():
    for name in FIXTURE_NAMES:
        fx = load_fixture(name)
        assert {"description", "reply", "reasoning", "chunks"} <= fx.keys()
        joined = "".join((ch["delta"].get("content") or "") for c in fx["chunks"] for ch in c["choices"])
        assert joined == fx["reply"], name
    assert "[[ ## completed ## ]]" not in load_fixture("chat_no_completed")["reply"]
    js = load_fixture("gpt4o_mini_json_qa")
    deltas = [ch["delta"].get("content") for c in js["chunks"] for ch in c["choices"]]
    assert any(d and d.endswith("\\") for d in deltas) and any(d and d.endswith("\\u00") for d in deltas)
    assert json.loads(js["reply"])["reasoning"] == js["fields"]["reasoning"]
    gem = load_fixture("gemini_chat_qa")
    sizes = [len(c["choices"][0]["delta"]["content"]) for c in gem["chunks"]]
    assert max(sizes) >= 40 and any("]]" in c["choices"][0]["delta"]["content"] and "." in
                                    c["choices"][0]["delta"]["content"] for c in gem["chunks"])


async def test_usage_chunk_when_include_usage(server, client):
    server.script("one two three", "one two three")
    stream = await client.chat.completions.create(model="demo", messages=MSGS, stream=True,
                                                  stream_options={"include_usage": True})
    _, _, chunks = await collect(stream)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 3 and last.usage.prompt_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    stream = await client.chat.completions.create(model="demo", messages=MSGS, stream=True)
    _, _, chunks = await collect(stream)
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"


async def test_reasoning_content_deltas_come_first(server, client):
    server.script(Reply(content="Paris.", reasoning="France's capital is Paris; no doubt."))
    stream = await client.chat.completions.create(model="demo", messages=MSGS, stream=True)
    content, reasoning, chunks = await collect(stream)
    assert "".join(reasoning) == "France's capital is Paris; no doubt." and len(reasoning) > 3
    assert "".join(content) == "Paris."
    kinds = ["r" if (c.choices and (c.choices[0].delta.model_extra or {}).get("reasoning_content"))
             else "c" if (c.choices and c.choices[0].delta.content) else "-" for c in chunks]
    assert "".join(k for k in kinds if k != "-") == "r" * len(reasoning) + "c" * len(content)


async def test_non_streaming_completion(server, client):
    server.script(Reply(content="Paris.", reasoning="Think."), [
        {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "Rec"}, "finish_reason": None}]},
        {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "orded"}, "finish_reason": "length"}]},
    ])
    r = await client.chat.completions.create(model="demo-model", messages=MSGS)
    assert r.object == "chat.completion" and r.model == "demo-model"
    assert r.choices[0].message.content == "Paris." and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.model_extra["reasoning_content"] == "Think."
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 4  # "Paris" "." "Think" "."
    r = await client.chat.completions.create(model="demo", messages=MSGS)
    assert r.choices[0].message.content == "Recorded" and r.choices[0].finish_reason == "length"


async def test_models_list(server, client):
    page = await client.models.list()
    assert [m.id for m in page.data] == ["demo"]
    assert server.requests == []  # only chat requests are recorded


# -- automatic responder --------------------------------------------------------------------------


def _messages(fmt_hint: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_BLOCK + "\n" + fmt_hint}, {"role": "user", "content": USER}]


async def test_auto_responder_chat_format(server, client):
    text = await stream_text(client, messages=_messages(
        "Reply with [[ ## reasoning ## ]], then [[ ## answer ## ]], ... ending with [[ ## completed ## ]]."))
    parts = text.split("\n\n")
    assert parts[0].startswith('[[ ## reasoning ## ]]\nLet me think step by step about "What is the meaning of life?"')
    assert parts[1] == "[[ ## answer ## ]]\n42"
    assert parts[2].startswith("[[ ## tags ## ]]\n[") and len(json.loads(parts[2].split("\n", 1)[1])) == 3
    assert parts[3:] == ["[[ ## label ## ]]\npos", "[[ ## ok ## ]]\nTrue", "[[ ## completed ## ]]"]
    assert "A famous book." in text  # mentions the other input too


async def test_auto_responder_xml_format(server, client):
    text = await stream_text(client, messages=_messages("Wrap each output field in XML tags."))
    for name in ("reasoning", "answer", "tags", "label", "ok"):
        assert f"<{name}>\n" in text and f"\n</{name}>" in text
    assert "<answer>\n42\n</answer>" in text and "<label>\npos\n</label>" in text and "<ok>\nTrue\n</ok>" in text
    assert text.index("<reasoning>") < text.index("<answer>") < text.index("<ok>")
    assert "[[ ##" not in text


async def test_auto_responder_json_format(server, client):
    text = await stream_text(client, messages=_messages("Reply with a JSON object."))
    obj = json.loads(text)
    assert list(obj) == ["reasoning", "answer", "tags", "label", "ok"]
    assert obj["answer"] == 42 and obj["label"] == "pos" and obj["ok"] is True
    assert obj["reasoning"].startswith('Let me think step by step about "What is the meaning of life?"')
    assert '\\"' in text  # the quoted question is JSON-escaped
    assert isinstance(obj["tags"], list) and all(isinstance(t, str) for t in obj["tags"])


async def test_auto_responder_is_deterministic_and_input_sensitive(server, client):
    msgs = _messages("[[ ## completed ## ]]")
    a, b = await stream_text(client, messages=msgs), await stream_text(client, messages=msgs)
    other = [msgs[0], {"role": "user", "content": USER.replace("life", "death")}]
    c = await stream_text(client, messages=other)
    assert a == b and a != c and "death" in c
    plain = await stream_text(client, messages=[{"role": "user", "content": "Tell me a joke"}])
    assert "Tell me a joke" in plain and "[[" not in plain
    assert a == auto_reply(msgs)


# -- connections -------------------------------------------------------------------------------------


async def test_sequential_requests_reuse_one_connection(server, client):
    server.script("first reply", "second reply")
    assert await stream_text(client) == "first reply"
    assert await stream_text(client) == "second reply"
    r = await client.chat.completions.create(model="demo", messages=MSGS)
    assert r.choices[0].message.content
    assert server.connections_opened == 1 and server.connections_closed == 0
    assert len(server.requests) == 3


async def test_client_leaving_early_closes_the_http_stream():
    with DemoServer(token_rate=200) as server:
        async with AsyncOpenAI(base_url=server.url, api_key="demo", max_retries=0) as c:
            server.script("word " * 400)
            stream = await c.chat.completions.create(model="demo", messages=MSGS, stream=True)
            got = 0
            async for chunk in stream:
                got += 1
                if got == 4:
                    break
            await stream.close()
            assert await asyncio.to_thread(server.wait_idle, 5.0)
            assert server.stream_closed_early == 1
            assert server.connections_closed == server.connections_opened == 1


async def test_token_rate_paces_the_stream():
    with DemoServer(token_rate=100) as server:
        async with AsyncOpenAI(base_url=server.url, api_key="demo", max_retries=0) as c:
            server.script("a b c d e f g h i j k l m n o p q r s t", Reply(content="a b c d e f g h", token_rate=0))
            t0 = time.perf_counter()
            assert await stream_text(c) == "a b c d e f g h i j k l m n o p q r s t"
            paced = time.perf_counter() - t0
            t0 = time.perf_counter()
            await stream_text(c)
            fast = time.perf_counter() - t0
    assert 0.18 <= paced < 1.5  # 20 tokens at 100/s
    assert fast < paced / 2


def test_fifty_thousand_chunks_are_fast(server):
    server.script(Reply(chunks=["x"] * 50_000))
    body = json.dumps({"model": "demo", "messages": MSGS, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        t0 = time.perf_counter()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        data = bytearray()
        while not data.endswith(b"\r\n0\r\n\r\n"):
            part = sock.recv(1 << 20)
            assert part
            data += part
        elapsed = time.perf_counter() - t0
    assert data.count(b'"delta":{"content":"x"}') == 50_000 and b"data: [DONE]" in data
    assert elapsed < 1.0


# -- faults ------------------------------------------------------------------------------------------


async def test_status_429_is_retried_by_the_client(server):
    server.script(Fault("status", status=429), "after the retry")
    async with AsyncOpenAI(base_url=server.url, api_key="demo", max_retries=1) as c:
        assert await stream_text(c) == "after the retry"
    assert len(server.requests) == 2


async def test_status_fault_times_and_error_body(server):
    server.script(Fault("status", status=500, times=2, retry_after=None, body={"error": {"message": "boom"}}),
                  "then fine")
    async with AsyncOpenAI(base_url=server.url, api_key="demo", max_retries=0) as c:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError, match="boom"):
                await c.chat.completions.create(model="demo", messages=MSGS, stream=True)
        assert await stream_text(c) == "then fine"
    server.script(Fault("status", status=429, times=3))
    async with AsyncOpenAI(base_url=server.url, api_key="demo", max_retries=1) as c:
        with pytest.raises(openai.RateLimitError) as info:
            await c.chat.completions.create(model="demo", messages=MSGS)
    assert info.value.body["code"] == "rate_limit_exceeded"
    assert len(server.requests) == 5 and server.pending == 1


async def test_drop_truncates_the_stream_with_an_error(server, client):
    server.script(Reply(content="one two three four five six", fault=Fault("drop", after=2)))
    stream = await client.chat.completions.create(model="demo", messages=MSGS, stream=True)
    got = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "one two"
    assert "[DONE]" not in "".join(got)
    assert await asyncio.to_thread(server.wait_idle, 5.0)
    assert server.connections_closed == 1 and server.stream_closed_early == 0


async def test_refuse_closes_without_answer(server, client):
    server.script(Fault("refuse"))
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="demo", messages=MSGS, stream=True)
    server.script(Fault("refuse"), "answered on retry")
    async with AsyncOpenAI(base_url=server.url, api_key="demo", max_retries=1) as c:
        assert await stream_text(c) == "answered on retry"
    assert len(server.requests) == 3


async def test_stall_then_client_timeout_counts_as_closed_early(server):
    server.script(Reply(content="a b c d e", fault=Fault("stall", after=2)))
    async with AsyncOpenAI(base_url=server.url, api_key="demo", max_retries=0, timeout=0.5) as c:
        stream = await c.chat.completions.create(model="demo", messages=MSGS, stream=True)
        got = []
        with pytest.raises(openai.APITimeoutError):
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "a b"
    assert await asyncio.to_thread(server.wait_idle, 5.0)
    assert server.stream_closed_early == 1 and server.connections_closed == 1


async def test_malformed_line_breaks_the_typed_client(server, client):
    server.script(Reply(content="a b c d", fault=Fault("malformed", after=1)))
    stream = await client.chat.completions.create(model="demo", messages=MSGS, stream=True)
    got = []
    with pytest.raises(json.JSONDecodeError):
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "a"


async def test_error_event_mid_stream(server, client):
    server.script(Reply(content="a b c d", fault=Fault("error_event", after=3, message="model overloaded")))
    stream = await client.chat.completions.create(model="demo", messages=MSGS, stream=True)
    got = []
    with pytest.raises(openai.APIError, match="model overloaded"):
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "a b c"


async def test_bare_fault_streams_the_automatic_reply(server, client):
    msgs = _messages("[[ ## completed ## ]]")
    server.script(Fault("drop", after=6))
    stream = await client.chat.completions.create(model="demo", messages=msgs, stream=True)
    got = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert auto_reply(msgs).startswith("".join(got)) and len(got) == 7


# -- lifecycle and command line ------------------------------------------------------------------------


def test_start_is_idempotent_and_stop_closes_everything():
    s = DemoServer()
    with pytest.raises(RuntimeError):
        _ = s.url
    assert s.start() is s and s.start() is s
    url = s.url
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    s.stop()
    s.stop()
    assert not s.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=1).close()


def test_command_line_serves_until_interrupted():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_stream.demo", "--port", str(port), "--rate", "0"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline().strip()
        assert line == f"demo LM listening on http://127.0.0.1:{port}/v1"
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="demo", max_retries=0)
        r = client.chat.completions.create(model="demo", messages=MSGS)
        assert r.choices[0].message.content.startswith("This is the demo model")
        client.close()
    finally:
        proc.send_signal(2)  # SIGINT, like Ctrl-C
        assert proc.wait(10) == 0


async def test_control_endpoints_script_a_server_from_another_process(server, client):
    import httpx

    base = server.url
    async with httpx.AsyncClient() as h:
        r = await h.post(f"{base}/demo/script", json={"replies": [
            "plain", {"content": "with reasoning", "reasoning": "hmm"}, {"kind": "status", "status": 503},
            {"content": "a b c d", "fault": {"kind": "drop", "after": 1}}]})
        assert r.json() == {"queued": 4, "pending": 4}
        assert await stream_text(client) == "plain"
        stream = await client.chat.completions.create(model="demo", messages=MSGS, stream=True)
        content, reasoning, _ = await collect(stream)
        assert "".join(content) == "with reasoning" and "".join(reasoning) == "hmm"
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="demo", messages=MSGS)
        assert info.value.status_code == 503
        with pytest.raises(openai.APIConnectionError):
            await stream_text(client)
        stats = (await h.get(f"{base}/demo/stats")).json()
        assert stats["requests"] == 4 and stats["pending"] == 0
        assert (await h.post(f"{base}/demo/script", json={"replies": [{"nope": 1}]})).status_code == 400
        await h.post(f"{base}/demo/reset")
    assert server.requests == [] and server.pending == 0


def test_bad_requests_and_bad_faults(server):
    with pytest.raises(ValueError):
        Fault("explode")
    with pytest.raises(TypeError):
        server.script(42)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{nop}")
        assert sock.recv(1024).startswith(b"HTTP/1.1 400 ")
        sock.sendall(b"GET /v1/nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(1024):
            data += chunk
        assert data.startswith(b"HTTP/1.1 404 ")  # the same connection went on after the 400


def _raw_chat(port: int, stream: bool = True) -> socket.socket:
    """A connection that has sent one chat request (read the answer from it)."""
    body = json.dumps({"model": "demo", "messages": MSGS, "stream": stream}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return sock


def _read_to_eof(sock: socket.socket) -> bytes:
    data = bytearray()
    while part := sock.recv(1 << 16):
        data += part
    return bytes(data)


def test_drop_on_the_wire_ends_mid_body_without_the_chunked_terminator(server):
    server.script(Reply(content="one two three four", fault=Fault("drop", after=2)), "a b c")
    with _raw_chat(server.port) as sock:
        data = _read_to_eof(sock)  # the server closes the connection
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
    assert b'"content":"one"' in body and b'"content":" two"' in body and b" three" not in body
    assert body.endswith(b"\r\n") and not body.endswith(b"0\r\n\r\n") and b"[DONE]" not in body
    with _raw_chat(server.port) as sock:  # the next request is answered in full on a new connection
        data = b""
        while not data.endswith(b"\r\n0\r\n\r\n"):
            data += sock.recv(1 << 16)
    assert b"data: [DONE]" in data
    assert server.wait_idle(5.0) and server.stream_closed_early == 0


def test_refuse_on_the_wire_sends_nothing(server):
    server.script(Fault("refuse"))
    with _raw_chat(server.port) as sock:
        assert _read_to_eof(sock) == b""
    assert len(server.requests) == 1


def test_stall_keeps_the_socket_open_until_the_server_stops():
    server = DemoServer().start()
    server.script(Reply(content="a b c d", fault=Fault("stall", after=1)))
    with _raw_chat(server.port) as sock:
        data = b""
        while b'"content":"a"' not in data:
            data += sock.recv(1 << 16)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1 << 16)  # nothing more, and the connection stays open
        t0 = time.perf_counter()
        server.stop()
        sock.settimeout(5)
        assert _read_to_eof(sock) == b""  # closed by stop(), without the terminator
        assert time.perf_counter() - t0 < 2.0
    assert server.connections_closed == server.connections_opened == 1


async def test_faults_without_streaming(server, client):
    server.script(Reply(content="one two three", fault=Fault("drop")), Reply(content="x", fault=Fault("malformed")),
                  Reply(content="x", fault=Fault("error_event", message="overloaded")),
                  Reply(content="x", fault=Fault("stall")))
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="demo", messages=MSGS)
    with pytest.raises(json.JSONDecodeError):
        await client.chat.completions.create(model="demo", messages=MSGS)
    with pytest.raises(openai.InternalServerError, match="overloaded"):
        await client.chat.completions.create(model="demo", messages=MSGS)
    async with AsyncOpenAI(base_url=server.url, api_key="demo", max_retries=0, timeout=0.3) as c:
        with pytest.raises(openai.APITimeoutError):
            await c.chat.completions.create(model="demo", messages=MSGS)
    assert len(server.requests) == 4 and server.pending == 0


async def test_routes_and_json_errors(server, caplog):
    import httpx

    root = server.url[: -len("/v1")]
    server.script(Fault("status", status=429))
    with caplog.at_level("DEBUG"):
        async with httpx.AsyncClient() as h:
            assert (await h.get(f"{root}/health")).json() == {"status": "ok"}
            assert (await h.get(f"{root}/v1/models/")).json()["data"][0]["id"] == "demo"
            assert (await h.get(f"{root}/v1/models/org/some-model")).json()["id"] == "org/some-model"
            r = await h.get(f"{root}/v1/nowhere")
            assert r.status_code == 404 and r.json()["error"]["message"] == "no route for GET /v1/nowhere"
            r = await h.get(f"{root}/v1/chat/completions")
            assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
            r = await h.post(f"{root}/chat/completions", json={"messages": MSGS})  # without the /v1 prefix
            assert r.status_code == 429 and r.headers["retry-after-ms"] == "10"
            assert r.headers["content-type"] == "application/json"
    assert [rec for rec in caplog.records if rec.name.startswith("tornado") and rec.levelno >= 30] == []


@pytest.mark.parametrize("adapter_name", ["chat", "json", "xml"])
async def test_auto_reply_parses_with_the_projects_adapters(server, client, adapter_name):
    from typing import Literal

    from jupyter_stream.adapters import get_adapter
    from jupyter_stream._signatures import InputField, OutputField, Signature

    class QA(Signature):
        """Answer the question."""

        question: str = InputField()
        context: str = InputField(desc="some description")
        reasoning: str = OutputField()
        answer: int = OutputField(desc="some description")
        tags: list[str] = OutputField()
        label: Literal["pos", "neg"] = OutputField()
        ok: bool = OutputField()
        note: str | None = OutputField()

    adapter = get_adapter(adapter_name)
    messages = adapter.format(QA, {"question": 'Why "42"?', "context": "A famous book."})
    text = await stream_text(client, messages=messages)
    out = adapter.parse(QA, text)
    assert out["answer"] == 42 and out["label"] == "pos" and out["ok"] is True and len(out["tags"]) == 3
    assert out["reasoning"].startswith('Let me think step by step about "Why "42"?"')
    assert "A famous book." in out["reasoning"] and out["note"]


class DemoGeo(pydantic.BaseModel):
    lat: float
    kind: Literal["city", "village"]


class DemoPlace(pydantic.BaseModel):
    name: str
    population: int = pydantic.Field(ge=1000)
    founded: datetime.date
    geo: DemoGeo
    aliases: list[str] = []
    note: str | None = None


class DemoWhere(Signature):
    question: str = InputField()
    place: DemoPlace = OutputField()
    nearby: list[DemoPlace] = OutputField()


@pytest.mark.parametrize("adapter_name", ["chat", "json", "xml"])
def test_auto_reply_fills_pydantic_fields_from_the_schema_in_the_prompt(adapter_name):
    """A pydantic-model output field (nested models, lists of them, enums, dates, optional parts) gets a
    value built from the schema the adapter's prompt gives, and the adapter's parse validates it."""
    adapter = get_adapter(adapter_name)
    messages = adapter.format(DemoWhere, {"question": "Where is the tower?"})
    assert "must adhere to the schema" in messages[0]["content"]
    out = adapter.parse(DemoWhere, auto_reply(messages))
    place, nearby = out["place"], out["nearby"]
    assert isinstance(place, DemoPlace) and place.population >= 1000 and place.geo.kind == "city"
    assert "Where is the tower?" in place.name  # text fields read like the demo's other answers
    assert len(nearby) == 2 and all(isinstance(p, DemoPlace) for p in nearby)


async def test_replies_scripted_per_model_go_to_that_model_first(server, client):
    import httpx

    server.script("shared")
    server.script("for a", Fault("status", status=503), model="a")
    async with httpx.AsyncClient() as h:
        r = await h.post(f"{server.url}/demo/script", json={"replies": ["for b"], "model": "b"})
    assert r.json() == {"queued": 1, "pending": 4}

    async def ask(model: str) -> str:
        reply = await client.chat.completions.create(model=model, messages=MSGS)
        return reply.choices[0].message.content

    assert [await ask("c"), await ask("b"), await ask("a")] == ["shared", "for b", "for a"]
    with pytest.raises(openai.APIStatusError):
        await ask("a")
    assert server.pending == 0
    assert (await ask("a")).startswith("This is the demo model")  # all queues empty: the automatic reply
