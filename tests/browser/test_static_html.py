"""The static HTML of a notebook run headless by default ``jupyter nbconvert --execute --to html``, opened in a
real Chromium with no network: every finished ``%%stream`` result shows (the widget manager's scripts, which
come from a CDN, cannot load; nbclient saved the widget state, so the exported page holds widget views)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import jupyter_stream as js

from .conftest import QUICKSTART, RECORDINGS, copy_quickstart, docs_screenshot, recorded_page

@pytest.fixture(scope="module")
def exported(tmp_path_factory, _requirements) -> Path:
    """The quickstart executed and exported by nbconvert with its default settings (demo LM, full speed)."""
    folder = tmp_path_factory.mktemp("static-html")
    copy_quickstart(folder)
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["JUPYTER_STREAM_DEMO_RATE"] = "0"
    proc = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--execute", QUICKSTART.name],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / (QUICKSTART.stem + ".html")


def test_every_finished_stream_shows_offline(request, browser, exported):
    from playwright.sync_api import expect

    html = exported.read_text("utf-8")
    assert 'type="application/vnd.jupyter.widget-view+json"' in html  # the case that used to show nothing
    with recorded_page(request, browser) as page:
        refused: list[str] = []
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                   else (refused.append(route.request.url), route.abort()))
        page.goto(exported.as_uri())
        cells = page.locator(".jp-CodeCell")
        streams = [cells.nth(i) for i in range(cells.count())
                   if "%%stream" in cells.nth(i).locator(".jp-InputArea").inner_text()
                   or "js.show(" in cells.nth(i).locator(".jp-InputArea").inner_text()]
        assert len(streams) == 8
        shown = 0
        for cell in streams:
            source = cell.locator(".jp-InputArea").inner_text()
            snapshot = cell.locator(".jps-snapshot")
            if "--background" in source:  # ended after its cell: nbclient no longer records it (a Jupyter limit)
                continue
            expect(snapshot).to_be_visible()
            expect(snapshot).to_contain_text("done")
            assert len(snapshot.locator("pre").first.inner_text().strip()) > 20, source
            shown += 1
        assert shown == 7
        sky = streams[0].locator(".jps-snapshot")
        expect(sky).to_contain_text("reasoning")
        expect(sky).to_contain_text("answer")
        # The last one plays a recording back (no LM): its snapshot holds the recorded answer.
        assert "js.replay(" in streams[-1].locator(".jp-InputArea").inner_text()
        replayed = streams[-1].locator(".jps-snapshot")
        expect(replayed).to_contain_text("Predict(question -> reasoning, answer)")
        expect(replayed).to_contain_text(js.load_recording(RECORDINGS / "sky.jsonl")[0].prediction.answer)
        assert any("html-manager" in url for url in refused), refused  # it did try the CDN, and failed
        docs_screenshot(sky, "static-html.png")
