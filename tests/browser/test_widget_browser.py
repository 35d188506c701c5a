"""The widget in a real JupyterLab, in a real Chromium: live panes, Stop, inert model output, a screenshot.

Everything is asserted from the DOM the user sees (stable classes of ``labextension/src/widget.ts``).
See ``conftest.py`` for the server and browser set-up; run with ``pytest tests/browser``.
"""

from __future__ import annotations

import re
import json
import subprocess
import sys
import time
from pathlib import Path

import jupyter_stream as js

from .conftest import RECORDINGS, docs_screenshot

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
QUESTION = "Why is the sky blue?"
DONE = re.compile(r"(^|\s)done(\s|$)")

# Records, in the page, every distinct text length of the first widget's reasoning pane while it is not
# done yet, and the length it had when it turned done. Installed before the cells run.
SAMPLER = """() => {
  const rec = window.__jpsSamples = {lengths: [], statuses: [], doneAt: null};
  const timer = setInterval(() => {
    const w = document.querySelector('.jps-widget');
    const pane = w && w.querySelector('.jps-pane[data-key="reasoning"]');
    if (!pane) return;
    const n = pane.querySelector('.jps-pane-text').textContent.length;
    if (pane.classList.contains('done')) { rec.doneAt = n; clearInterval(timer); return; }
    if (rec.lengths[rec.lengths.length - 1] !== n) { rec.lengths.push(n); rec.statuses.push(w.dataset.status); }
  }, 10);
}"""


def _pane_text(widget, key: str):
    return widget.locator(f'.jps-pane[data-key="{key}"] .jps-pane-text')


def _wait_status(page, widget, status: str, timeout: float = 30) -> None:
    handle = widget.element_handle()
    page.wait_for_function("([el, s]) => el.dataset.status === s", arg=[handle, status], timeout=timeout * 1000)


def test_quickstart_streams_live_and_finishes(page, lab):
    from playwright.sync_api import expect

    lab.open(page, "01_quickstart.ipynb")
    page.evaluate(SAMPLER)
    lab.run_all(page)

    sky = lab.cell(page, '%%stream "question -> reasoning, answer"').locator(".jps-widget")
    expect(sky).to_have_count(1, timeout=30_000)
    reasoning = sky.locator('.jps-pane[data-key="reasoning"]')
    answer = sky.locator('.jps-pane[data-key="answer"]')
    expect(reasoning).to_have_class(DONE, timeout=30_000)
    expect(answer).to_have_class(DONE, timeout=30_000)
    _wait_status(page, sky, "done")

    # The panes filled live: many distinct lengths, growing, all seen while the stream was running.
    samples = page.evaluate("window.__jpsSamples")
    lengths = samples["lengths"]
    print(f"reasoning pane: {len(lengths)} lengths seen while running {lengths}, done at {samples['doneAt']}")
    assert len(set(lengths)) >= 3, samples
    assert lengths == sorted(lengths), samples
    assert set(samples["statuses"]) == {"running"}, samples
    assert samples["doneAt"] is not None and samples["doneAt"] >= lengths[-1], samples

    reasoning_text = _pane_text(sky, "reasoning").text_content()
    answer_text = _pane_text(sky, "answer").text_content()
    assert QUESTION in reasoning_text
    assert QUESTION in answer_text
    assert samples["doneAt"] == len(reasoning_text)
    expect(sky.locator(".jps-status")).to_contain_text("done")
    expect(sky.locator(".jps-stop")).to_be_disabled()
    expect(sky.locator(".jps-error")).to_be_hidden()

    # The final prediction: collapsed, then shows the answer when opened.
    prediction = sky.locator("details.jps-prediction")
    body = prediction.locator(".jps-prediction-body")
    expect(body).to_be_hidden()
    prediction.locator("summary").click()
    expect(body).to_be_visible()
    expect(body.locator('.jps-field[data-field="answer"] .jps-field-value')).to_have_text(answer_text)
    expect(body.locator('.jps-field[data-field="reasoning"] .jps-field-value')).to_have_text(reasoning_text)

    # The prompt inspector: the messages sent (chat adapter markers) and the raw reply.
    inspector = sky.locator("details.jps-inspector")
    expect(inspector.locator("summary")).to_have_text("Prompt inspector (1 LM call)")
    inspector.locator("summary").click()
    expect(inspector.locator('.jps-msg[data-role="user"] .jps-msg-content')).to_contain_text(
        f"[[ ## question ## ]]\n{QUESTION}"
    )
    expect(inspector.locator(".jps-msg[data-role='system']")).to_have_count(1)
    expect(inspector.locator(".jps-raw")).to_contain_text("[[ ## answer ## ]]")

    # `--out sky` stored the prediction: the next cell shows the answer.
    expect(lab.cell(page, "sky.answer").locator(".jp-OutputArea-output")).to_contain_text(QUESTION)

    # The two-step pipeline: one pane per listened field, both done; its screenshot goes into the docs.
    pipeline = lab.cell(page, "%%stream pipeline").locator(".jps-widget")
    _wait_status(page, pipeline, "done")
    keys = pipeline.locator(".jps-pane").evaluate_all("els => els.map(e => e.dataset.key)")
    assert keys == ["draft.predict.paragraph", "polish.polished"]
    expect(pipeline.locator(".jps-pane.done")).to_have_count(2)
    pipeline.locator("details.jps-prediction > summary").click()
    expect(pipeline.locator('.jps-field[data-field="polished"]')).to_be_visible()
    shot = docs_screenshot(pipeline, "widget.png")
    assert shot.stat().st_size > 5_000

    # Every stream of the notebook ends done (the background one, js.show and the replay included), no error shown.
    widgets = page.locator(".jps-widget")
    page.wait_for_function(
        "() => { const ws = [...document.querySelectorAll('.jps-widget')];"
        " return ws.length >= 8 && ws.every(w => w.dataset.status === 'done'); }",
        timeout=60_000,
    )
    assert widgets.count() == 8
    expect(page.locator(".jps-widget .jps-error:visible")).to_have_count(0)
    # The replay cell played the committed recording back (no LM): its panes hold the recorded fields.
    (recorded,) = js.load_recording(RECORDINGS / "sky.jsonl")
    replayed = lab.cell(page, 'js.replay("recordings/sky.jsonl")').locator(".jps-widget")
    expect(replayed.locator(".jps-title")).to_have_text(recorded.title)
    for field, value in recorded.outputs().items():
        expect(_pane_text(replayed, field)).to_have_text(value)
    expect(lab.cell(page, 'js.replay("recordings/sky.jsonl")').locator(".jp-OutputArea-output").last).to_have_text(
        repr(recorded.prediction.answer))
    # Each cell's static snapshot (for viewers without widgets) is there, each beside its widget, and hidden
    # with its whole output row: the page shows each result once, with no gap.
    expect(page.locator(".jps-snapshot")).to_have_count(8)
    expect(page.locator(".jps-snapshot-pending")).to_have_count(0)
    assert page.evaluate("""() => [...document.querySelectorAll('.jps-snapshot')].map(s => {
        const row = s.closest('.jp-OutputArea-child');
        const area = row.closest('.jp-OutputArea');
        return [getComputedStyle(row).display, row.getBoundingClientRect().height,
                !!area.querySelector(`.jps-widget[data-jps-uid="${s.dataset.jpsUid}"]`)];
    })""") == [["none", 0, True]] * 8
    expect(page.get_by_text("another cell runs 2")).to_have_count(1)
    # The eight widgets run one copy of the front end's code (the packed loader shares the first one's module).
    assert page.evaluate("globalThis[Symbol.for('jupyter_stream.modules.v1')].size") == 1
    # The eight views adopted one stylesheet into the page (one sheet, adopted once), and it applies.
    assert page.evaluate("[...document.adoptedStyleSheets].filter(s => [...s.cssRules].some("
                         "r => (r.selectorText || '').includes('.jps-widget'))).length") == 1
    assert page.evaluate(
        "getComputedStyle(document.querySelector('.jps-widget')).getPropertyValue('--jps-fg').trim()"
    ) != ""


def test_stop_button_stops_a_slow_stream(page, lab):
    from playwright.sync_api import expect

    lab.open(page, "stop.ipynb")
    lab.run_all(page)
    widget = lab.cell(page, '%%stream "question -> essay"').locator(".jps-widget")
    pane = widget.locator('.jps-pane[data-key="essay"]')
    text = pane.locator(".jps-pane-text")
    page.wait_for_function(
        "el => el.textContent.length > 20", arg=text.element_handle(timeout=30_000), timeout=30_000
    )
    stop = widget.locator(".jps-stop")
    expect(stop).to_be_enabled()
    assert widget.get_attribute("data-status") == "running"
    stop.click()

    _wait_status(page, widget, "stopped", timeout=10)
    expect(widget.locator(".jps-status")).to_contain_text("stopped")
    expect(stop).to_be_disabled()
    partial = text.text_content()
    assert len(partial) > 20
    assert partial.startswith("Paragraph 0: tea was traded")
    time.sleep(1.0)
    assert text.text_content() == partial, "the pane kept growing after Stop"
    assert len(partial) < 2000, "the whole essay arrived: Stop came too late to test anything"
    expect(pane).not_to_have_class(DONE)
    expect(widget.locator(".jps-error")).to_be_hidden()

    # The kernel is free again: the next cell ran, and the stream cell shows no traceback.
    after = lab.cell(page, "print(").locator(".jp-OutputArea-output")
    expect(after).to_have_text("after stop, the kernel runs cells: 42", timeout=15_000)
    expect(page.get_by_text("Python 3 (ipykernel) | Idle", exact=True)).to_be_visible(timeout=15_000)
    outputs = lab.cell(page, '%%stream "question -> essay"').locator(".jp-OutputArea").inner_text()
    assert "Traceback" not in outputs and "CancelledError" not in outputs, outputs


def test_hostile_model_output_is_inert(page, lab):
    """Markup in a reply stays text, in a plain pane and in a Markdown pane (one notebook, two widgets)."""
    from playwright.sync_api import expect

    lab.open(page, "hostile.ipynb")
    lab.run_all(page)
    page.wait_for_function(
        "() => { const ws = [...document.querySelectorAll('.jps-widget')];"
        " return ws.length === 2 && ws.every(w => w.dataset.status === 'done'); }",
        timeout=30_000,
    )
    plain = lab.cell(page, "Say something hostile.").locator(".jps-widget")
    md = lab.cell(page, "Say something hostile in Markdown.").locator(".jps-widget")
    for mode, widget in (("plain", plain), ("markdown", md)):
        # Open everything that holds model text.
        widget.locator("details.jps-prediction > summary").click()
        widget.locator("details.jps-inspector > summary").click()
        expect(widget.locator(".jps-raw")).to_contain_text("<script>window.__pwned=1</script>")
        expect(widget.locator('.jps-field[data-field="answer"] .jps-field-value')).to_contain_text("<script>")
        text = widget.locator('.jps-pane[data-key="answer"] .jps-pane-text')
        content = text.text_content()
        assert "<script>window.__pwned=1</script>" in content, (mode, content)
        assert '<img src=x onerror="window.__pwned=2">' in content, (mode, content)
        assert 'href="javascript:alert(1)"' in content, (mode, content)
        if mode == "markdown":
            expect(text).to_have_class(re.compile(r"\bjps-md\b"))
            expect(text.locator("p")).not_to_have_count(0)
        else:
            expect(text).not_to_have_class(re.compile(r"\bjps-md\b"))
    page.wait_for_timeout(500)  # an <img onerror> would have fired by now

    assert page.evaluate("document.querySelectorAll('.jps-widget script, .jps-widget img').length") == 0
    assert page.evaluate(
        "document.querySelectorAll('.jps-widget a, .jps-widget iframe, .jps-widget [onerror]').length"
    ) == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate(
        "document.querySelectorAll('.jp-OutputArea-output img, .jp-OutputArea-output script').length"
    ) == 0
    assert not [line for line in page.console_log if line.startswith("[dialog]")], page.console_log


def _iopub_until(kc, log: list, done, timeout: float) -> None:
    """Append the kernel client's iopub messages to ``log`` until ``done(log)`` (AssertionError after ``timeout`` s)."""
    import queue

    deadline = time.monotonic() + timeout
    while not done(log):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not seen on iopub in {timeout} s; last messages: {[m['msg_type'] for m in log[-10:]]}")
        try:
            log.append(kc.get_iopub_msg(timeout=min(left, 0.5)))
        except queue.Empty:
            pass


def _delta_texts(msgs) -> list[tuple[object, str]]:
    """(kernel send time, text) of every widget delta batch of the answer pane in ``msgs``."""
    out = []
    for m in msgs:
        data = m["content"].get("data", {}) if m["msg_type"] == "comm_msg" else {}
        if data.get("method") == "custom" and data["content"].get("type") == "deltas":
            text = "".join(item[1] for item in data["content"]["items"] if item[0] == "answer")
            out.append((m["header"]["date"], text))
    return out


def test_closing_the_tab_mid_stream_keeps_the_kernel_streaming_and_responsive(page, lab, request):
    """Closing the tab is not a Stop: the kernel (Jupyter's design) runs on, so the stream must end normally
    with every widget message sent into the void, and the cells after it must run at once.

    Watched from a second client on the same kernel (jupyter_client, from the kernel's connection file): the
    widget deltas go on after the server has no front end connected, the widget ends "done" (no error), the
    `--out` variable holds the whole reply, the server saw no early close, the notebook's queued cell and a
    new cell run promptly after the stream, and the server reports the kernel idle.
    """
    import json
    from datetime import datetime, timezone

    from .conftest import CLOSE_TAB_ANSWER

    lab.open(page, "closetab.ipynb")
    kernel_id = lab.kernel_id("closetab.ipynb")
    kc = lab.kernel_client(kernel_id)
    try:
        lab.run_all(page)
        widget = lab.cell(page, '%%stream "question -> answer"').locator(".jps-widget")
        text = widget.locator('.jps-pane[data-key="answer"] .jps-pane-text')
        page.wait_for_function(
            "el => el.textContent.includes('word3 ')", arg=text.element_handle(timeout=30_000), timeout=30_000
        )
        log: list = []
        _iopub_until(kc, log, lambda ms: _delta_texts(ms), 10)  # the second client hears the stream too
        assert widget.get_attribute("data-status") == "running"
        shown = text.text_content()
        assert CLOSE_TAB_ANSWER.startswith(shown) and "word149" not in shown, shown
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-before-close.png"))

        page.close()
        deadline = time.monotonic() + 15
        while lab.api("GET", f"/api/kernels/{kernel_id}")["connections"] != 0:
            assert time.monotonic() < deadline, "the server still has a websocket on the kernel after page.close()"
            time.sleep(0.05)
        gone = datetime.now(timezone.utc)  # from here on no front end receives anything

        # The stream goes on to its end: deltas and the final "done" state are sent after the tab went away.
        def finished(ms) -> bool:
            return any(
                m["msg_type"] == "comm_msg" and m["content"]["data"].get("method") == "update"
                and m["content"]["data"]["state"].get("status") == "done" for m in ms
            )

        _iopub_until(kc, log, finished, 20)
        done_at = next(
            m["header"]["date"] for m in log if m["msg_type"] == "comm_msg"
            and m["content"]["data"].get("method") == "update" and m["content"]["data"]["state"].get("status") == "done"
        )
        deltas = _delta_texts(log)
        heard = "".join(t for _, t in deltas)
        # The end is one update: the final snapshot, at the last batch's seq, with any text no batch carried.
        final = next(m["content"]["data"]["state"] for m in log if m["msg_type"] == "comm_msg"
                     and m["content"]["data"].get("method") == "update"
                     and m["content"]["data"]["state"].get("status") == "done")
        seqs = [m["content"]["data"]["content"]["seq"] for m in log if m["msg_type"] == "comm_msg"
                and m["content"]["data"].get("method") == "custom"
                and m["content"]["data"]["content"].get("type") == "deltas"]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and final["snapshot_seq"] == seqs[-1], seqs
        # The page said hello before it closed, so the final snapshot goes by reference: no text, only what
        # no batch carried (what came after the last flush, if anything: a token or two) and the length.
        [pane] = final["panes"]
        assert "text" not in pane and pane["len"] == len(CLOSE_TAB_ANSWER), pane
        # No gap from the first batch heard to the end: the batches, then the final tail.
        assert heard and CLOSE_TAB_ANSWER.endswith(heard + pane["tail"]), (heard[-40:], pane)
        end = len(CLOSE_TAB_ANSWER) - len(pane["tail"])
        assert pane["tail"].count(" ") <= 2, pane["tail"]
        # More than what was left when the tab closed went out after.
        assert len(heard) + len(CLOSE_TAB_ANSWER) - end > len(CLOSE_TAB_ANSWER) - len(shown)
        after_close = [d for d, _ in deltas if d > gone]
        assert after_close and done_at > gone, "the stream ended before the tab was gone: nothing was tested"
        print(f"tab closed with {len(shown)} of {len(CLOSE_TAB_ANSWER)} characters shown; {len(after_close)} delta "
              f"batches sent after, stream done {(done_at - gone).total_seconds():.2f} s after the close")

        # The notebook's next cell (queued by Run All before the close) runs, then a new cell from this client.
        _iopub_until(kc, log, lambda ms: any(
            m["msg_type"] == "stream" and "after the tab closed: word149" in m["content"]["text"] for m in ms), 15)
        code = (
            "import json\nfrom ipywidgets.widgets.widget import _instances\n"
            "from jupyter_stream.demo import shared_server\n"
            "_ws = [w for w in list(_instances.values()) if type(w).__name__ == 'StreamWidget']\n"
            "_srv = shared_server()\n"
            "print(json.dumps({'answer': closed_tab.answer,"
            " 'widgets': [[w.status, w.error, [p['text'] for p in w.panes]] for w in _ws],"
            " 'requests': len(_srv.requests), 'closed_early': _srv.stream_closed_early}))"
        )
        msg_id = kc.execute(code)
        mine: list = []
        _iopub_until(kc, mine, lambda ms: any(
            m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
            and m["content"]["execution_state"] == "idle" for m in ms), 20)
        log += mine
        reply = kc.get_shell_msg(timeout=10)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=10)
        assert reply["content"]["status"] == "ok", reply["content"]
        # Promptly: the cell was waiting only for the stream (seconds are generous; it takes milliseconds).
        assert (reply["header"]["date"] - done_at).total_seconds() < 5.0
        out = "".join(m["content"]["text"] for m in mine
                      if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id)
        state = json.loads(out)
        assert state["answer"] == CLOSE_TAB_ANSWER
        assert state["widgets"] == [["done", "", [CLOSE_TAB_ANSWER]]]
        assert state["requests"] == 1 and state["closed_early"] == 0  # the request ran to its end
        assert not [m for m in log if m["msg_type"] == "error"], [m["content"] for m in log if m["msg_type"] == "error"]

        deadline = time.monotonic() + 10
        while lab.api("GET", f"/api/kernels/{kernel_id}")["execution_state"] != "idle":
            assert time.monotonic() < deadline, "the server does not see the kernel idle"
            time.sleep(0.1)
    finally:
        kc.stop_channels()


def test_a_page_reloaded_mid_stream_catches_up_and_follows_the_stream(page, lab):
    """Reload the page while a stream runs: the widget comes back from the kernel's state, which holds no
    text while streaming (the text travels once, in the batches), asks for a snapshot, shows the whole text
    so far at once and follows the stream to its end, with no hole or repeat."""
    from playwright.sync_api import expect

    from .conftest import RELOAD_ANSWER

    lab.open(page, "reload.ipynb")
    lab.run_all(page)
    widget = lab.cell(page, '%%stream "question -> answer"').locator(".jps-widget")
    text = widget.locator('.jps-pane[data-key="answer"] .jps-pane-text')
    page.wait_for_function(
        "el => el.textContent.includes('word30 ')", arg=text.element_handle(timeout=30_000), timeout=30_000
    )
    # Save, so that the reloaded page has the cell's widget output to render.
    page.keyboard.press("Control+s")
    saved = lab.notebook_dir / "reload.ipynb"
    deadline = time.monotonic() + 15
    while "application/vnd.jupyter.widget-view+json" not in saved.read_text("utf-8"):
        assert time.monotonic() < deadline, "the notebook was not saved with the widget's output"
        time.sleep(0.1)
    before = text.text_content()
    assert widget.get_attribute("data-status") == "running" and "word299" not in before

    page.reload()
    widget = lab.cell(page, '%%stream "question -> answer"').locator(".jps-widget")
    text = widget.locator('.jps-pane[data-key="answer"] .jps-pane-text')
    expect(text).to_have_count(1, timeout=30_000)
    # While it still runs, the pane holds the text from the start, more than before the reload.
    shown = page.wait_for_function(
        "([el, w, n]) => w.dataset.status === 'running' && el.textContent.length > n && el.textContent",
        arg=[text.element_handle(), widget.element_handle(), len(before)], timeout=30_000,
    ).json_value()
    assert RELOAD_ANSWER.startswith(shown) and shown.startswith(before), shown
    _wait_status(page, widget, "done", timeout=60)
    assert text.text_content() == RELOAD_ANSWER
    expect(widget.locator('.jps-pane[data-key="answer"]')).to_have_class(DONE)

    # Reloaded after the end: the kernel's state holds the final snapshot by reference (a page said
    # hello), which a fresh page cannot fill in; it asks, and shows the whole text.
    page.reload()
    widget = lab.cell(page, '%%stream "question -> answer"').locator(".jps-widget")
    text = widget.locator('.jps-pane[data-key="answer"] .jps-pane-text')
    expect(text).to_have_count(1, timeout=30_000)
    _wait_status(page, widget, "done", timeout=30)
    expect(text).to_have_text(RELOAD_ANSWER, timeout=10_000)
    expect(widget.locator('.jps-pane[data-key="answer"]')).to_have_class(DONE)
    assert not [line for line in page.console_log if line.startswith("[pageerror]")], page.console_log


def test_the_saved_widget_state_holds_the_text_the_page_filled_in(page, lab):
    """The end of a stream comes by reference to a page that said hello: the page fills the text in from
    the batches and sets it on its model, so a notebook saved with its widget state holds the text. Its
    180 kB prompt stays in the kernel: the inspector loads it when opened; the saved state holds a preview."""
    from playwright.sync_api import expect

    from .conftest import SAVED_ANSWER, SAVED_INPUT

    setting = "/lab/api/settings/@jupyter-widgets/jupyterlab-manager:plugin"
    lab.api("PUT", setting, {"raw": json.dumps({"saveState": True})})
    try:
        lab.open(page, "saved.ipynb")
        lab.run_all(page)
        widget = lab.cell(page, '%%stream "question -> answer"').locator(".jps-widget")
        _wait_status(page, widget, "done", timeout=60)
        text = widget.locator('.jps-pane[data-key="answer"] .jps-pane-text')
        assert text.text_content() == SAVED_ANSWER
        widget.locator("details.jps-inspector > summary").click()
        user = widget.locator('.jps-msg[data-role="user"] .jps-msg-content')
        # Queried on every poll: the inspector draws its calls anew when the whole prompt arrives.
        page.wait_for_function(
            "(n) => [...document.querySelectorAll('.jps-inspector .jps-msg[data-role=\"user\"] .jps-msg-content')]"
            ".some(p => p.textContent.length > n)", arg=len(SAVED_INPUT) * 20_000, timeout=20_000)
        assert user.text_content().count(SAVED_INPUT.strip()) == 20_000
        expect(widget.locator(".jps-held")).to_have_count(0)
        saved = lab.notebook_dir / "saved.ipynb"
        mtime = saved.stat().st_mtime_ns
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 15
        while saved.stat().st_mtime_ns == mtime:
            assert time.monotonic() < deadline, "the notebook was not saved"
            time.sleep(0.1)
        nb = json.loads(saved.read_text("utf-8"))
        states = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        ours = [m["state"] for m in states.values() if m["state"].get("status") == "done"]
        assert [[(p.get("text"), p.get("done")) for p in m["panes"]] for m in ours] == [[(SAVED_ANSWER, True)]]
        [call] = ours[0]["lm_calls"]
        assert call["held"] > len(SAVED_INPUT) * 20_000 and call["messages"][-1]["cut"] > 170_000
        assert saved.stat().st_size < 100_000, saved.stat().st_size
        # Exported as it was saved (widget state and all), the HTML shows the result with no network.
        export = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(saved)],
                                capture_output=True, text=True, timeout=120)
        assert export.returncode == 0, export.stderr[-2000:]
        offline = page.context.new_page()
        offline.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
        offline.goto(saved.with_suffix(".html").as_uri())
        expect(offline.locator(".jps-snapshot")).to_be_visible()
        expect(offline.locator(".jps-snapshot pre").first).to_have_text(SAVED_ANSWER)
        offline.close()
        # The kernel sent the end by reference: the text is in the saved state because the page put it there.
        kc = lab.kernel_client(lab.kernel_id("saved.ipynb"))
        try:
            msg_id = kc.execute("print(_final_by_ref())")
            out = []
            deadline = time.monotonic() + 20
            while True:
                m = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
                if m["parent_header"].get("msg_id") != msg_id:
                    continue
                if m["msg_type"] == "stream":
                    out.append(m["content"]["text"])
                if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                    break
        finally:
            kc.stop_channels()
        assert "".join(out).split() == ["True", "True"], out
        assert not [line for line in page.console_log if line.startswith("[pageerror]")], page.console_log
    finally:
        lab.api("PUT", setting, {"raw": json.dumps({"saveState": False})})


def test_a_dspy_react_agent_shows_each_step_as_its_own_panes(page, lab):
    """notebooks/02_dspy.ipynb in the browser: ReAct's steps are separate pane groups with tool status lines."""
    import importlib.util

    from playwright.sync_api import expect

    if importlib.util.find_spec("dspy") is None:  # pragma: no cover - make test installs it
        import pytest

        pytest.skip("DSPy is not installed")
    lab.open(page, "02_dspy.ipynb")
    lab.run_all(page)
    agent = lab.cell(page, "%%stream agent").locator(".jps-widget")
    expect(agent).to_have_count(1, timeout=60_000)
    _wait_status(page, agent, "done", timeout=90)
    groups = agent.locator(".jps-group").evaluate_all("els => els.map(e => e.dataset.predict)")
    assert groups == ["react", "react[2]", "react[3]", "extract.predict"], groups
    step2 = agent.locator('.jps-group[data-predict="react[2]"]')
    keys = step2.locator(".jps-pane").evaluate_all("els => els.map(e => e.dataset.key)")
    assert keys == ["react[2].next_thought", "react[2].next_tool_name", "react[2].next_tool_args"], keys
    assert _pane_text(agent, "react[2].next_tool_name").text_content() == "lookup"
    assert _pane_text(agent, "react.next_tool_name").text_content() == "search"
    expect(agent.locator(".jps-pane.done")).to_have_count(11)
    log = agent.locator(".jps-log").text_content() or ""
    assert "Calling tool search..." in log and "Calling tool lookup..." in log, log
    expect(agent.locator(".jps-error")).to_be_hidden()
    inspector = agent.locator("details.jps-inspector")
    expect(inspector.locator("summary")).to_have_text("Prompt inspector (4 LM calls)")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jps-widget')].length === 4"
        " && [...document.querySelectorAll('.jps-widget')].every(w => w.dataset.status === 'done')",
        timeout=60_000,
    )
    page.set_viewport_size({"width": 1000, "height": 1600})  # the whole widget below the toolbar
    shot = docs_screenshot(agent, "react.png")
    assert shot.stat().st_size > 5_000
