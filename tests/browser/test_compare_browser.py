"""``%%stream --compare`` in JupyterLab (Debian chromium + Playwright): three models in one widget, a column each,
each with its own status line, the word diff at the end; then one Stop that stops three slow variants."""

from __future__ import annotations

import re
import time

from jupyter_stream._worddiff import word_ops

from .conftest import COMPARE_ANSWERS, docs_screenshot

LABELS = [f"model={m}" for m in COMPARE_ANSWERS]
SEP = "\x1f"


def _wait_status(page, element, status: str, timeout: float = 30) -> None:
    page.wait_for_function("([el, s]) => el.dataset.status === s", arg=[element.element_handle(), status],
                           timeout=timeout * 1000)


def test_three_models_stream_side_by_side_then_one_stop_stops_them_all(page, lab):
    from playwright.sync_api import expect

    lab.open(page, "compare.ipynb")
    lab.run_all(page)  # the last cell runs too: test_a_cell_run_again... runs it on its own
    widget = lab.cell(page, "--compare model=gpt-4o-mini").locator(".jps-widget")
    expect(widget).to_have_count(1, timeout=30_000)  # one widget for the three variants

    # Live: the three columns stream at once (each answer pane grows while the comparison runs).
    heads = widget.locator(".jps-variant")
    expect(heads).to_have_count(3)
    assert heads.evaluate_all("els => els.map(e => e.dataset.variant)") == LABELS
    page.wait_for_function(
        "w => w.dataset.status === 'running' && [...w.querySelectorAll('.jps-variant')]"
        ".every(h => /\\d+ tok/.test(h.querySelector('.jps-stats').textContent))",
        arg=widget.element_handle(), timeout=30_000,
    )
    _wait_status(page, widget, "done", timeout=60)

    # Each column: its model's text, the same field of every column on the same grid row.
    for label, (reasoning, answer) in zip(LABELS, COMPARE_ANSWERS.values()):
        for field, text in (("reasoning", reasoning), ("answer", answer)):
            pane = widget.locator(f'.jps-pane[data-key="{label}{SEP}.{field}"]')
            expect(pane.locator(".jps-pane-text")).to_have_text(text)
    boxes = widget.locator(".jps-pane, .jps-variant").evaluate_all(
        "els => Object.fromEntries(els.map(e => [e.dataset.key ?? e.dataset.variant,"
        " [Math.round(e.getBoundingClientRect().top), Math.round(e.getBoundingClientRect().left)]]))")
    lefts = [boxes[label][1] for label in LABELS]
    assert lefts == sorted(lefts) and len(set(lefts)) == 3, boxes  # three columns, in the variants' order
    for field in ("reasoning", "answer"):
        cells = [boxes[f"{label}{SEP}.{field}"] for label in LABELS]
        assert len({top for top, _ in cells}) == 1, (field, cells)  # one row per field
        assert [left for _, left in cells] == lefts, (field, cells)  # each under its variant's header
    # Each variant's own status line: done, with its tokens and time to the first token.
    for i in range(3):
        head = heads.nth(i)
        assert head.get_attribute("data-status") == "done"
        assert re.search(r"\d+ tok", head.locator(".jps-stats").text_content() or ""), head.inner_text()
        expect(head.locator(".jps-model")).to_have_text(list(COMPARE_ANSWERS)[i])
    # The word diff of the answers, against the first model.
    diff = widget.locator(".jps-diff")
    expect(diff).to_be_visible()
    answer_vs_41 = diff.locator(".jps-diff-field[data-field='answer']").nth(0)
    expect(answer_vs_41.locator(".jps-field-name")).to_have_text("answer: model=gpt-4o-mini \u2192 model=gpt-4.1-mini")
    ops = word_ops(COMPARE_ANSWERS["gpt-4o-mini"][1], COMPARE_ANSWERS["gpt-4.1-mini"][1])
    assert answer_vs_41.locator("ins").all_text_contents() == [t for op, t in ops if op == "+"]
    assert answer_vs_41.locator("del").all_text_contents() == [t for op, t in ops if op == "-"]
    assert answer_vs_41.locator(".jps-diff-text").text_content() == "".join(
        t for _, t in ops)  # every piece shown once, in order, as text
    expect(widget.locator(".jps-variant .jps-error:visible")).to_have_count(0)
    page.set_viewport_size({"width": 1280, "height": 1400})
    shot = docs_screenshot(widget, "compare.png")
    assert shot.stat().st_size > 5_000

    # One Stop for three slow variants: every column stops, every request is closed.
    slow = lab.cell(page, "--compare model=slow-a").locator(".jps-widget")
    expect(slow).to_have_count(1, timeout=30_000)
    texts = slow.locator(".jps-pane-text")
    page.wait_for_function(
        "w => { const t = [...w.querySelectorAll('.jps-pane-text')]; return t.length === 3 &&"
        " t.every(e => e.textContent.length > 20); }", arg=slow.element_handle(), timeout=30_000)
    stop = slow.locator(".jps-stop")
    expect(stop).to_have_count(1)
    stop.click()
    _wait_status(page, slow, "stopped", timeout=10)
    assert slow.locator(".jps-variant").evaluate_all("els => els.map(e => e.dataset.status)") == ["stopped"] * 3
    partial = texts.all_text_contents()
    time.sleep(1.0)
    assert texts.all_text_contents() == partial, "a column kept growing after Stop"
    assert all(20 < len(t) < 2000 for t in partial), [len(t) for t in partial]
    closed = lab.cell(page, "print('closed early:'").locator(".jp-OutputArea-output")
    expect(closed).to_have_text("closed early: 3", timeout=30_000)


def test_a_cell_run_again_offers_the_diff_with_its_previous_run(page, lab):
    """JupyterLab names the cell it runs (cellId): the second run of a cell shows what changed since its first."""
    from playwright.sync_api import expect

    lab.open(page, "compare.ipynb")
    lab.cell(page, "%load_ext jupyter_stream").locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")  # the set-up cell (the demo answers an unscripted model on its own)
    cell = lab.cell(page, "Run me twice.")
    for run in (1, 2):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Control+Enter")
        widget = cell.locator(".jps-widget")
        expect(widget).to_have_count(1, timeout=30_000)
        _wait_status(page, widget, "done", timeout=60)
        box = widget.locator(".jps-rundiff")
        if run == 1:
            expect(box).to_be_hidden()
    expect(box.locator("summary")).to_have_text(
        re.compile(r"Diff with the previous run of this cell \(#\d+ → #\d+\): no change"), timeout=10_000)
