"""The widget in the front ends other than JupyterLab, in a real Chromium: Notebook 7, Voila and marimo.

Notebook 7 is served by the tests' JupyterLab server (the ``notebook`` package adds its pages to it); Voila
and marimo run as their own servers (``voila``, ``marimo run``) in a temp home. Each test watches a pane
grow while its stream runs (live, where the host allows it), then checks the finished result, that it is
styled (the stylesheet reached the view: marimo renders each widget in a shadow root) and shown once (the
static snapshot beside the widget hides itself), and leaves a screenshot in ``docs/``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _served import free_port

from .conftest import (
    FRONTEND_ANSWERS, TEST_NOTEBOOKS, _ci, _write_json, docs_screenshot, isolated_env, recorded_page,
)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

# Records, for every widget on the page (inside shadow roots too), each distinct length of its first pane's
# text while the widget is running, and its status. Installed before the streams start.
SAMPLER = """() => {
  const rec = window.__jpsSamples = {};
  const widgets = (root, out = []) => {
    out.push(...root.querySelectorAll('.jps-widget'));
    for (const el of root.querySelectorAll('*')) if (el.shadowRoot) widgets(el.shadowRoot, out);
    return out;
  };
  setInterval(() => widgets(document).forEach((w, i) => {
    const r = rec[i] = rec[i] || {lengths: [], status: null};
    r.status = w.dataset.status;
    const text = w.querySelector('.jps-pane-text');
    if (!text || w.dataset.status !== 'running') return;
    const n = text.textContent.length;
    if (r.lengths[r.lengths.length - 1] !== n) r.lengths.push(n);
  }), 10);
}"""


def _grew_live(samples: dict, index: int) -> list[int]:
    lengths = samples[str(index)]["lengths"]
    assert len(set(lengths)) >= 3 and lengths == sorted(lengths), samples
    return lengths


def _styled(widget) -> None:
    """The widget's stylesheet applies to it (its custom properties and its pane borders)."""
    assert widget.evaluate("w => getComputedStyle(w).getPropertyValue('--jps-fg').trim()") != ""
    assert widget.locator(".jps-pane").first.evaluate("p => getComputedStyle(p).borderTopStyle") == "solid"


@contextmanager
def _host(args: list[str], *, cwd: Path, env: dict[str, str], url: str, name: str) -> Iterator[None]:
    """A front end's server as a subprocess, until ``url`` answers; stopped (its process group) afterwards."""
    log_path = cwd / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
                try:
                    urllib.request.urlopen(url, timeout=2).close()
                    break
                except urllib.error.HTTPError:
                    break  # it answers
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"{name} did not answer in 90 s:\n{log_path.read_text(errors='replace')[-3000:]}")
                    time.sleep(0.3)
            yield
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copy(log_path, ARTIFACTS / log_path.name)


def _needs(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        message = f"{what} tests need {module} (the test extras)"
        if _ci():
            pytest.fail(message + " (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(message)


def _check_frontends_notebook(page, samples_index_live: int) -> None:
    """Both widgets of ``frontends.ipynb`` end done with their text, styled, each shown once."""
    from playwright.sync_api import expect

    page.wait_for_function(
        "() => { const ws = [...document.querySelectorAll('.jps-widget')];"
        " return ws.length === 2 && ws.every(w => w.dataset.status === 'done'); }", timeout=90_000)
    widgets = page.locator(".jps-widget")
    for widget, answer in zip((widgets.nth(0), widgets.nth(1)), FRONTEND_ANSWERS):
        expect(widget.locator('.jps-pane[data-key="answer"] .jps-pane-text')).to_have_text(answer)
        _styled(widget)
    _grew_live(page.evaluate("window.__jpsSamples"), samples_index_live)
    visible_snapshots = page.evaluate(
        "() => [...document.querySelectorAll('.jps-snapshot, .jps-snapshot-pending')].filter("
        "s => s.getClientRects().length > 0).length")
    assert visible_snapshots == 0


def test_notebook_7_streams_live_and_finishes(request, browser, lab):
    """Notebook 7 (its own pages, on the same server): both cells stream live and finish."""
    _needs("notebook", "Notebook 7")
    with recorded_page(request, browser) as page:
        try:
            page.goto(f"{lab.url}/notebooks/frontends.ipynb?token={lab.token}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
            deadline = time.monotonic() + 60  # the kernel is up and idle
            while not [s for s in lab.api("GET", "/api/sessions") if s.get("path") == "frontends.ipynb"
                       and s["kernel"]["execution_state"] == "idle"]:
                assert time.monotonic() < deadline, "Notebook 7 started no kernel"
                time.sleep(0.2)
            page.evaluate(SAMPLER)
            lab.run_all(page)
            _check_frontends_notebook(page, 0)
            _grew_live(page.evaluate("window.__jpsSamples"), 1)
            docs_screenshot(page.locator(".jps-widget").first, "notebook7.png")
        finally:
            lab.shutdown_kernels()


def test_voila_shows_the_results_and_streams_background_cells_live(request, browser, tmp_path):
    """Voila runs every cell before it shows the page: a plain cell shows its finished widget; a
    ``--background`` cell streams live in the shown page."""
    _needs("voila", "Voila")
    home = tmp_path / "home"
    home.mkdir()
    _write_json(tmp_path / "frontends.ipynb", TEST_NOTEBOOKS["frontends.ipynb"])
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    args = [sys.executable, "-m", "voila", "frontends.ipynb", "--no-browser", f"--port={port}",
            "--Voila.ip=127.0.0.1"]
    with _host(args, cwd=tmp_path, env=isolated_env(home), url=url + "voila/static/", name="voila"), \
            recorded_page(request, browser) as page:
        page.add_init_script(f"({SAMPLER})()")
        page.goto(url, timeout=120_000)
        _check_frontends_notebook(page, 1)
        samples = page.evaluate("window.__jpsSamples")
        assert samples["0"]["lengths"] == [], samples  # the plain cell had finished before the page showed
        docs_screenshot(page.locator(".jps-widget").nth(1), "voila.png")


MARIMO_APP = '''\
import marimo

app = marimo.App()


@app.cell
def _():
    import jupyter_stream as js
    from jupyter_stream.demo import shared_server

    shared_server().script("[[ ## answer ## ]]\\n" + {answer!r} + "\\n\\n[[ ## completed ## ]]")
    view = js.show(js.Predict("question -> answer"), question="Why is the sky blue?")
    view
    return (view,)


@app.cell
def _(view):
    import marimo as mo

    mo.ui.anywidget(view.widget)
    return


if __name__ == "__main__":
    app.run()
'''


def test_marimo_streams_live_styled_with_show_and_mo_ui_anywidget(request, browser, tmp_path):
    """``marimo run``: ``js.show(...)`` and ``mo.ui.anywidget(view.widget)`` (two views of one widget, each in
    a shadow root) stream live, end done and look as in JupyterLab."""
    _needs("marimo", "marimo")
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "app.py").write_text(MARIMO_APP.format(answer=FRONTEND_ANSWERS[0]), "utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    args = [sys.executable, "-m", "marimo", "run", "app.py", "--headless", "--host", "127.0.0.1", f"--port={port}",
            "--no-token"]
    with _host(args, cwd=tmp_path, env=isolated_env(home), url=url, name="marimo"), \
            recorded_page(request, browser) as page:
        from playwright.sync_api import expect

        page.add_init_script(f"({SAMPLER})()")
        page.goto(url)
        widgets = page.locator(".jps-widget")  # Playwright's CSS locators pierce open shadow roots
        expect(widgets).to_have_count(2, timeout=90_000)
        for i in range(2):
            expect(widgets.nth(i)).to_have_attribute("data-status", "done", timeout=90_000)
            expect(widgets.nth(i).locator('.jps-pane[data-key="answer"] .jps-pane-text')).to_have_text(
                FRONTEND_ANSWERS[0])
            _styled(widgets.nth(i))
            assert widgets.nth(i).evaluate("w => w.getRootNode() instanceof ShadowRoot")
        samples = page.evaluate("window.__jpsSamples")
        _grew_live(samples, 0)
        _grew_live(samples, 1)
        assert page.evaluate(  # the page itself got no stylesheet of ours: each shadow root has it
            "[...document.adoptedStyleSheets].filter(s => [...s.cssRules].some("
            "r => (r.selectorText || '').includes('.jps-widget'))).length") == 0
        docs_screenshot(widgets.first, "marimo.png")
