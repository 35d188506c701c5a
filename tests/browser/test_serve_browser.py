"""``jupyter-stream serve`` read by a real Chromium: its page at ``/``, a browser ``EventSource`` on
``GET /stream``, errors on the page and in the event stream, model output as inert text, and CORS.

``serve`` runs as a subprocess (``tests/_served.py``) against the loopback LM server (``server`` of
``tests/conftest.py``). The browser is ``conftest.py``'s (Debian's Chromium, same arguments, same
skip-unless-CI rule); the ``page`` fixture here replaces ``conftest.py``'s, which is tied to JupyterLab,
so no JupyterLab starts for these tests. Every test leaves a screenshot in ``test-artifacts/``
(``<test>.png``, or ``<test>-FAILED.png`` plus the page's console log when it failed).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from _served import Served
from jupyter_stream.demo import Fault, Reply

from .conftest import recorded_page

WAIT = 30_000  # ms: the longest any expectation waits (a bound, never a measurement)

MODEL = "m"
# The page's status once the prediction frame came (serve tells the model's name in that frame).
DONE_STATUS = f"done \u00b7 {MODEL}"
ANSWER = "Paris is the capital."
REPLY = f"[[ ## answer ## ]]\n{ANSWER}\n\n[[ ## completed ## ]]"
# About 100 tokens at 30 tokens/s: some 3 s, so the page shows the answer growing. Several lines and
# non-ASCII text (cut across chunks and network reads) must come out exactly.
SLOW_ANSWER = (" ".join(f"word{i}" for i in range(20)) + ",\nthen café, naïve, 東京 and ☕;\n"
               + " ".join(f"word{i}" for i in range(20, 40)) + ".")
SLOW_RATE = 30
HOSTILE_ANSWER = (
    '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> <a href="javascript:alert(1)">x</a>'
)
BAD_REQUEST = {"error": {"message": "bad request", "type": "invalid_request_error"}}
HOSTILE_ERROR = {"error": {"message": '<img src=x onerror="window.__pwned=3">nope', "type": "invalid_request_error"}}

_counter = itertools.count()


def _question(text: str) -> str:
    """A question never asked before in this serve process (its LM caches replies in memory)."""
    return f"{text} #{next(_counter)}"


def _chat(answer: str) -> str:
    return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def _serve_requirements(_requirements) -> None:
    """The ``serve`` extra, with the browser tests' rule: skipped without it, unless CI is set."""
    missing = [m for m in ("uvicorn", "starlette") if importlib.util.find_spec(m) is None]
    if missing:
        message = f"serve browser tests need {', '.join(missing)} (pip install -e '.[serve]')"
        if _ci():
            pytest.fail(message + " (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(message)


def _serve(server, *extra: str) -> Served:
    return Served("question -> answer", "--base-url", server.url, "--model", MODEL, *extra)


@pytest.fixture(scope="module")
def served(_serve_requirements, server):
    """``jupyter-stream serve`` without CORS, for all but one test of this module."""
    app = _serve(server)
    yield app
    app.stop()


class _Blank(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"<!doctype html><html><head><title>other origin</title></head><body>other origin</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _blank_origin():
    """A blank page on another loopback port: another origin than serve's. A real server, not a page
    fulfilled by ``page.route``: Chromium counts such a page as public and refuses it loopback anyway
    (Local Network Access), whatever serve's CORS says."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Blank)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


other_origin = pytest.fixture(scope="module", name="other_origin")(_blank_origin)
stranger_origin = pytest.fixture(scope="module", name="stranger_origin")(_blank_origin)


@pytest.fixture(scope="module")
def cors_served(_serve_requirements, server, other_origin):
    """``jupyter-stream serve --cors-origin <other_origin>``."""
    app = _serve(server, "--cors-origin", other_origin)
    yield app
    app.stop()


@pytest.fixture
def lm_server(server):
    """The loopback LM server, reset for the test; afterwards no stream of it may still be in flight."""
    server.reset()
    yield server
    assert server.wait_idle(10.0), "an LM stream was still in flight after the test"


@pytest.fixture
def page(request, browser, _serve_requirements):
    """A recorded page (``conftest.recorded_page``) with no JupyterLab behind it."""
    with recorded_page(request, browser, width=1000, height=800) as pg:
        yield pg


# ------------------------------------------------------------------------------------- helpers

# Records every distinct text of the answer pane, from the DOM's own mutations (no polling, no timing).
RECORD_ANSWER = """() => {
  const seen = window.__answerTexts = [];
  const note = () => {
    const pre = document.querySelector('#pane-answer pre');
    const text = pre ? pre.textContent : null;
    if (text !== null && seen[seen.length - 1] !== text) seen.push(text);
  };
  new MutationObserver(note).observe(document.getElementById('panes'),
                                     {subtree: true, childList: true, characterData: true});
}"""

# Opens an EventSource on `url`, collects its messages until [DONE], then closes it. Counts opens and
# errors: a stream that ends without [DONE] makes the EventSource reconnect (a second open), which is
# what these tests must never see. Gives up (and says so) after three errors or 30 s, so a reconnect loop
# fails the test instead of hanging it.
EVENT_SOURCE = """async (url) => await new Promise((resolve) => {
  const out = {messages: [], opens: 0, errors: [], gaveUp: false};
  const es = new EventSource(url);
  const finish = () => { es.close(); clearTimeout(timer); resolve(out); };
  const timer = setTimeout(() => { out.gaveUp = true; finish(); }, 30000);
  es.onopen = () => { out.opens += 1; };
  es.onerror = () => {
    out.errors.push(es.readyState);
    if (es.readyState === EventSource.CLOSED || out.errors.length >= 3) { out.gaveUp = true; finish(); }
  };
  es.onmessage = (e) => { out.messages.push(e.data); if (e.data === '[DONE]') finish(); };
})"""

# Posts `body` to `url` with fetch and reads the whole body; a rejected fetch comes back as its error.
FETCH = """async ([url, body]) => {
  try {
    const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'},
                                body: JSON.stringify(body)});
    return {ok: true, status: r.status, type: r.headers.get('content-type'), text: await r.text()};
  } catch (e) {
    return {ok: false, name: e.name, message: String(e.message)};
  }
}"""


def _expect():
    from playwright.sync_api import expect

    return expect


def _frames(messages: list[str]) -> list:
    """The messages of an event stream: JSON objects, and the final ``[DONE]`` as is."""
    return [m if m == "[DONE]" else json.loads(m) for m in messages]


def _sse_frames(text: str) -> list:
    """The ``data:`` frames of a whole ``text/event-stream`` body."""
    frames = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            frames.append(data if data == "[DONE]" else json.loads(data))
    return frames


def _joined(frames: list) -> str:
    return "".join(f["stream_response"]["chunk"] for f in frames if isinstance(f, dict) and "stream_response" in f)


def _ask(page, served: Served, question: str) -> None:
    page.goto(served.url + "/")
    page.locator('textarea[name="question"]').fill(question)
    page.get_by_role("button", name="Stream").click()


# ---------------------------------------------------------------------------------------- tests


def test_the_page_shows_the_answer_growing_then_whole(page, served, lm_server):
    lm_server.script(Reply(content=_chat(SLOW_ANSWER), token_rate=SLOW_RATE))
    expect = _expect()
    page.goto(served.url + "/")
    page.evaluate(RECORD_ANSWER)
    question = _question("Count for me")
    page.locator('textarea[name="question"]').fill(question)
    page.get_by_role("button", name="Stream").click()

    answer = page.locator("#pane-answer pre")
    expect(page.locator("#status")).to_have_text(DONE_STATUS, timeout=WAIT)
    expect(answer).to_have_text(SLOW_ANSWER, timeout=WAIT)
    assert page.locator("#pane-answer h3").text_content() == "answer"
    assert page.locator("#error").text_content() == ""
    assert page.locator("#panes .pane").count() == 1

    seen = [t for t in page.evaluate("window.__answerTexts") if t]
    assert seen[-1] == SLOW_ANSWER
    partial = [t for t in seen if t != SLOW_ANSWER]
    assert partial, f"the pane never showed a partial answer: {seen}"
    assert all(SLOW_ANSWER.startswith(t) for t in partial), seen  # it only ever grew, in order
    assert all(len(a) < len(b) for a, b in zip(seen, seen[1:])), seen

    assert lm_server.wait_idle(10.0)
    assert len(lm_server.requests) == 1
    assert question in json.dumps(lm_server.requests[0]["messages"])


def test_model_output_is_shown_as_text_never_as_html(page, served, lm_server):
    lm_server.script(_chat(HOSTILE_ANSWER))
    expect = _expect()
    _ask(page, served, _question("Say something hostile"))
    expect(page.locator("#status")).to_have_text(DONE_STATUS, timeout=WAIT)

    answer = page.locator("#pane-answer pre")
    assert answer.text_content() == HOSTILE_ANSWER
    # One text node and nothing else: the markup never became elements.
    assert answer.evaluate("pre => [pre.childNodes.length, pre.firstChild.nodeType, pre.children.length]") == [1, 3, 0]
    assert page.locator("#panes img, #panes script, #panes a").count() == 0
    assert page.locator("img").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_an_event_source_reads_get_stream_once_and_ends_with_done(page, served, lm_server):
    lm_server.script(REPLY)
    page.goto(served.url + "/")
    question = _question("Capital of France?")
    result = page.evaluate(EVENT_SOURCE, f"stream?question={urllib.parse.quote(question)}")

    assert not result["gaveUp"], result
    assert result["opens"] == 1 and result["errors"] == [], result
    frames = _frames(result["messages"])  # every frame is JSON but the last
    assert frames[-1] == "[DONE]" and frames.count("[DONE]") == 1
    assert frames[-2] == {"prediction": {"answer": ANSWER}, "model": MODEL}
    assert _joined(frames) == ANSWER
    chunks = [f["stream_response"] for f in frames if isinstance(f, dict) and "stream_response" in f]
    assert {c["signature_field_name"] for c in chunks} == {"answer"}
    assert not any("error" in f for f in frames if isinstance(f, dict))

    assert lm_server.wait_idle(10.0)
    assert len(lm_server.requests) == 1, "the EventSource reconnected and ran the call again"
    assert question in json.dumps(lm_server.requests[0]["messages"])


def test_a_failed_call_shows_its_error_on_the_page_and_stops_running(page, served, lm_server):
    lm_server.script(Fault("status", status=400, body=BAD_REQUEST))
    expect = _expect()
    _ask(page, served, _question("Fail, please"))

    error = page.locator("#error")
    expect(error).to_contain_text("LMError: ", timeout=WAIT)
    expect(error).to_contain_text("HTTP 400: bad request", timeout=WAIT)
    # The stream is over (the error frame and [DONE] come together): the page says so.
    expect(page.locator("#status")).to_have_text("failed", timeout=WAIT)
    assert page.locator("#pane-answer").count() == 0
    assert lm_server.wait_idle(10.0)
    assert len(lm_server.requests) == 1  # a 400 is not retried


def test_a_failed_call_ends_an_event_source_with_error_then_done_and_no_reconnect(page, served, lm_server):
    lm_server.script(Fault("status", status=400, body=BAD_REQUEST))
    page.goto(served.url + "/")
    result = page.evaluate(EVENT_SOURCE, f"stream?question=fail%20by%20GET%20{next(_counter)}")

    assert not result["gaveUp"], result
    assert result["opens"] == 1 and result["errors"] == [], result
    frames = _frames(result["messages"])
    assert frames[-1] == "[DONE]"
    error = frames[-2]["error"]
    assert error["type"] == "LMError" and "HTTP 400: bad request" in error["message"], frames
    assert not any("prediction" in f for f in frames if isinstance(f, dict))
    assert lm_server.wait_idle(10.0)
    assert len(lm_server.requests) == 1, "the EventSource reconnected and ran the failing call again"


def test_an_error_message_is_shown_as_text_never_as_html(page, served, lm_server):
    lm_server.script(Fault("status", status=400, body=HOSTILE_ERROR))
    expect = _expect()
    _ask(page, served, _question("Fail with markup"))

    error = page.locator("#error")
    expect(error).to_contain_text('<img src=x onerror="window.__pwned=3">nope', timeout=WAIT)
    assert error.evaluate("e => e.children.length") == 0
    assert page.locator("img").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_another_origin_reads_stream_when_serve_allows_it(page, cors_served, other_origin, lm_server):
    lm_server.script(REPLY, REPLY)
    page.goto(other_origin + "/")
    assert page.evaluate("location.origin") == other_origin

    # fetch with a JSON body: a CORS preflight, then the stream.
    result = page.evaluate(FETCH, [cors_served.url + "/stream", {"question": _question("Capital, across origins?")}])
    assert result["ok"], result
    assert result["status"] == 200 and result["type"].startswith("text/event-stream"), result
    frames = _sse_frames(result["text"])
    assert frames[-1] == "[DONE]" and frames[-2] == {"prediction": {"answer": ANSWER}, "model": MODEL}
    assert _joined(frames) == ANSWER

    # And an EventSource from that origin.
    events = page.evaluate(EVENT_SOURCE, f"{cors_served.url}/stream?question=across%20by%20GET%20{next(_counter)}")
    assert not events["gaveUp"] and events["opens"] == 1 and events["errors"] == [], events
    assert _joined(_frames(events["messages"])) == ANSWER

    assert lm_server.wait_idle(10.0)
    assert len(lm_server.requests) == 2


def test_another_origin_cannot_read_stream_without_cors(page, served, other_origin, lm_server):
    page.goto(other_origin + "/")
    result = page.evaluate(FETCH, [served.url + "/stream", {"question": _question("Capital, uninvited?")}])
    assert result["ok"] is False and result["name"] == "TypeError", result
    # The preflight was refused, so the POST itself never went out: no LM call.
    assert lm_server.requests == []


def test_an_origin_serve_was_not_told_cannot_read_stream(page, cors_served, other_origin, stranger_origin,
                                                         lm_server):
    # --cors-origin lets in that origin only, not any: a page of yet another loopback origin is refused.
    stranger = stranger_origin
    assert stranger != other_origin
    page.goto(stranger + "/")
    assert page.evaluate("location.origin") == stranger
    result = page.evaluate(FETCH, [cors_served.url + "/stream", {"question": _question("Capital, for a stranger?")}])
    assert result["ok"] is False and result["name"] == "TypeError", result
    assert lm_server.requests == []


def test_with_a_token_the_page_sends_the_one_typed_in(page, server, lm_server):
    """Under ``--token-env`` the page has a password field; its value goes in the Authorization header
    (a wrong one: the 401 on the page, and no LM call)."""
    app = Served("question -> answer", "--base-url", server.url, "--model", MODEL, "--token-env", "SERVE_PAGE_TOKEN",
                 env={"SERVE_PAGE_TOKEN": "tok-page-1"})
    expect = _expect()
    try:
        lm_server.script(REPLY)
        page.goto(app.url + "/")
        page.locator('textarea[name="question"]').fill(_question("With a wrong token"))
        page.locator('input[name="__bearer"]').fill("wrong")
        page.get_by_role("button", name="Stream").click()
        expect(page.locator("#error")).to_have_text("HTTP 401: missing or wrong Authorization: Bearer token",
                                                    timeout=WAIT)
        expect(page.locator("#status")).to_have_text("failed")
        assert lm_server.requests == []
        page.locator('input[name="__bearer"]').fill("tok-page-1")
        page.get_by_role("button", name="Stream").click()
        expect(page.locator("#status")).to_have_text(DONE_STATUS, timeout=WAIT)
        expect(page.locator("#pane-answer pre")).to_have_text(ANSWER)
        assert len(lm_server.requests) == 1
    finally:
        assert "tok-page-1" not in app.stop()
