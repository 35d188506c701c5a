"""Hostile model output renders as inert text: in the terminal renderer and in the HTML snapshot.

The reply streams through the real server and client; its events feed :class:`jupyter_stream.TextRenderer`
and a :class:`WidgetSink` whose widget state becomes the static HTML snapshot (what a saved notebook shows
without a kernel). The live widget in a real browser is checked by ``tests/browser``.
"""

from __future__ import annotations

import html
import io
import re
import time
from html.parser import HTMLParser
from typing import Any

import pytest
from _reliability import close_pools  # noqa: F401

import jupyter_stream as js
from jupyter_stream.demo import Reply
from jupyter_stream.notebook.display import WidgetDisplay
from jupyter_stream.notebook.snapshot import render_html

pytestmark = pytest.mark.usefixtures("close_pools")

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
LINKS = "[click me](javascript:alert(1)) <a href=\"javascript:alert(1)\">here</a> <a href='JaVaScRiPt:alert(2)'>x</a>"
CONTROLS = "bell\x07 nul\x00 bs\x08 cr\r vt\x0b ff\x0c del\x7f csi\x9b osc\x1b]0;pwned\x07"
ANSI = "\x1b[2J\x1b[31mred\x1b[0m \x1b[1A\x1b[2K"
HOSTILE = f"{SCRIPT} {IMG} {LINKS} {CONTROLS} {ANSI} end"
REPLY = f"[[ ## reasoning ## ]]\nThink: {HOSTILE}\n\n[[ ## answer ## ]]\n{HOSTILE}\n\n[[ ## completed ## ]]"

# The renderer's own styles (color=True); anything else starting with ESC came from the model.
OWN_STYLES = re.compile(r"\x1b\[(?:1;36|1;32|2|31|33|0)m")
ALLOWED_TAGS = {"div", "b", "i", "pre", "details", "summary", "style"}
# The one stylesheet of a snapshot: it hides the snapshot where its widget (by id) shows.
OUR_STYLE = re.compile(r'\.jp-OutputArea:has\(\.jps-widget\[data-jps-uid="[0-9a-f]+"\]\) > '
                       r'\.jp-OutputArea-child:has\(\.jps-snapshot\[data-jps-uid="[0-9a-f]+"\]\)\{display:none\}')
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 but tab and newline, DEL, C1


def assert_inert_terminal(text: str, *, color: bool) -> None:
    if color:
        text = OWN_STYLES.sub("", text)
    bad = sorted({f"U+{ord(c):04X}" for c in _CONTROL.findall(text)})
    assert bad == [], f"control characters reached the terminal: {bad}"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def assert_inert_html(page: str, *, expect_text: str | None = None) -> None:
    low = page.lower()
    assert "<script" not in low and "<img" not in low and "<a " not in low and "<a>" not in low
    assert not re.search(r"href\s*=\s*['\"]?\s*javascript:", low)
    parser = _Tags()
    parser.feed(page)
    parser.close()
    tags = {t for t, _ in parser.tags}
    assert tags <= ALLOWED_TAGS, tags - ALLOWED_TAGS  # no element came from the model's text
    styles = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert len(styles) <= 1 and all(OUR_STYLE.fullmatch(css) for css in styles), styles  # ours only
    attrs = {a for _, pairs in parser.tags for a, _v in pairs}
    assert attrs <= {"class", "style", "data-jps-uid"}, attrs  # no event handler attribute, no href, no src
    if expect_text is not None:
        assert html.escape(expect_text, quote=True) in page  # the text is there, escaped


def _render_all(events: list[Any], error: BaseException | None = None, *,
                color: bool = True) -> tuple[str, str, WidgetDisplay]:
    plain, colored = io.StringIO(), io.StringIO()
    renderers = [js.TextRenderer(plain, color=False)] + ([js.TextRenderer(colored, color=True)] if color else [])
    shown = WidgetDisplay(display=False)
    shown.start(title="predict", model="test-model")
    for ev in events:
        for r in renderers:
            r.handle(ev)
        shown.handle(ev)
    final = events[-1] if events and isinstance(events[-1], js.Prediction) else None
    for r in renderers:
        r.finish(error=error)
    shown.finish(prediction=final, error=error)
    return plain.getvalue(), colored.getvalue(), shown


def test_hostile_reply_is_inert_in_terminal_and_snapshot(lm: js.LM, server: Any) -> None:
    server.script(REPLY)
    events = list(js.stream(js.ChainOfThought("question -> answer"), None, {"question": "q"}, lm_events=True))
    final = events[-1]
    assert final.answer == HOSTILE.strip() and final.reasoning == f"Think: {HOSTILE}".strip()
    plain, colored, shown = _render_all(events)
    assert_inert_terminal(plain, color=False)
    assert_inert_terminal(colored, color=True)
    assert "\x1b" not in plain
    assert SCRIPT in plain and IMG in plain  # shown as text, not dropped
    assert "␛[2J␛[31mred" in plain  # ANSI made visible: U+241B for ESC
    # The widget's state keeps the model's exact text (the front end renders it as text).
    assert shown.sink.texts() == {"predict.reasoning": final.reasoning, "predict.answer": final.answer}
    page = shown.snapshot_sink.html
    assert_inert_html(page, expect_text=SCRIPT)
    assert html.escape(IMG, quote=True) in page
    assert shown.widget.lm_calls[0]["raw"] == REPLY  # the prompt inspector's raw reply, verbatim in the state


def test_hostile_text_in_errors_and_status_is_inert(lm: js.LM, server: Any) -> None:
    """A reply that never opens the field: its text comes back in the error message."""
    server.script(f"Sorry! {HOSTILE}")
    events: list[Any] = []
    with pytest.raises(js.AdapterParseError) as info:
        for ev in js.stream(js.Predict("question -> answer"), None, {"question": "q"}):
            events.append(ev)
    assert SCRIPT in str(info.value)  # the message quotes the reply...
    events.insert(0, js.StatusMessage(f"status {HOSTILE}"))
    plain, colored, shown = _render_all(events, error=info.value)
    assert_inert_terminal(plain, color=False)  # ... and the terminal shows it inert
    assert_inert_terminal(colored, color=True)
    assert "error: AdapterParseError:" in plain
    page = shown.snapshot_sink.html
    assert_inert_html(page, expect_text=SCRIPT)
    assert shown.widget.status == "error" and SCRIPT in shown.widget.error


def test_snapshot_escapes_every_field_it_shows() -> None:
    """Every string render_html takes is model- or user-controlled somewhere: all are escaped."""
    page = render_html(title=HOSTILE, model=HOSTILE, status=HOSTILE, status_message=HOSTILE,
                       panes=[{"key": HOSTILE, "text": HOSTILE, "done": True}],
                       prediction={HOSTILE: HOSTILE, "typed": {"k": [HOSTILE]}}, error=HOSTILE,
                       stats={"tokens": 3, "elapsed": 1.0, "ttft": 0.1})
    assert_inert_html(page, expect_text=SCRIPT)


def test_ten_megabyte_field_streams_completely(lm: js.LM, server: Any) -> None:
    unit = f"{SCRIPT} {IMG} \x1b[2J\x1b[31m é😀 line\n"
    big = (unit * (10_000_000 // len(unit) + 1))[:10_000_000].rstrip()
    step = 64 * 1024
    deltas = ["[[ ## answer ## ]]\n"] + [big[i:i + step] for i in range(0, len(big), step)] + ["\n\n[[ ## completed ## ]]"]
    server.script(Reply(chunks=deltas))
    started = time.monotonic()
    chunks: list[str] = []
    final = None
    for ev in js.stream(js.Predict("question -> answer"), None, {"question": "q"}, stream_timeout=30):
        if isinstance(ev, js.StreamResponse):
            chunks.append(ev.chunk)
        else:
            final = ev
    streamed = time.monotonic() - started
    assert isinstance(final, js.Prediction)
    joined = "".join(chunks)
    assert len(joined) == len(big) and joined == final.answer == big
    assert streamed < 20, f"10 MB took {streamed:.1f} s to stream"
    started = time.monotonic()
    plain, _colored, shown = _render_all([js.StreamResponse("self", "answer", c, False) for c in chunks] + [final],
                                         color=False)
    assert time.monotonic() - started < 20
    assert_inert_terminal(plain, color=False)
    assert shown.sink.texts() == {"answer": big}
    page = shown.snapshot_sink.html
    assert "<script" not in page.lower() and "<img" not in page.lower()
    # Once: in the pane; the prediction's answer names the pane instead of repeating 10 MB.
    assert page.count(html.escape(SCRIPT)) == big.count(SCRIPT)
    assert "<div><b>answer</b> <i>(the text of answer above)</i></div>" in page
