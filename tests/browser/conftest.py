"""Browser tests: a real JupyterLab server and Debian's Chromium driven by Playwright (sync API).

One JupyterLab server serves all the browser tests (free loopback port, random token, a temp notebook dir
holding the quickstart and the test notebooks, and HOME / JUPYTER_* / IPYTHONDIR / XDG_* all pointed at a
temp dir so nothing is written into the real home). Each test gets a fresh browser context and page,
opens its notebook with ``?reset`` (no saved workspace), waits for ``Python 3 (ipykernel) | Idle`` and runs
all cells through the Run menu. Its kernels are shut down afterwards.

Every test leaves a full-page screenshot in ``test-artifacts/`` (``<test>.png``; ``<test>-FAILED.png`` plus
the page's console log when it failed). The JupyterLab log goes to ``test-artifacts/jupyterlab.log``.

Requirements: ``jupyterlab`` and ``playwright`` (the ``test`` extras) and a ``chromium`` on PATH
(``make chromium``; ``playwright install`` is never used). Without them the tests are skipped, unless
``CI`` is set: then they fail.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from _served import free_port

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "notebooks" / "01_quickstart.ipynb"
DSPY_NOTEBOOK = ROOT / "notebooks" / "02_dspy.ipynb"
RECORDINGS = ROOT / "notebooks" / "recordings"  # the quickstart's replay cell plays recordings/sky.jsonl
ARTIFACTS = ROOT / "test-artifacts"

DEMO_RATE = "60"  # tokens/s of the demo LM in the kernels: slow enough to watch the panes fill
IDLE = "Python 3 (ipykernel) | Idle"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

# A hostile reply: markup that would run script if any of it reached the DOM as HTML.
HOSTILE = (
    "[[ ## answer ## ]]\n"
    '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> <a href="javascript:alert(1)">x</a>'
    "\n\n[[ ## completed ## ]]"
)
# The close-the-tab test's reply: about 300 tokens, some 5 s at DEMO_RATE, so the tab closes mid-stream.
CLOSE_TAB_ANSWER = " ".join(f"word{i}" for i in range(150))
# The reload test's reply: about 600 tokens at RELOAD_RATE, some 24 s, so the page reloads mid-stream even when
# saving and reloading take long on a loaded machine (at DEMO_RATE, 10 s, it could end first).
RELOAD_ANSWER = " ".join(f"word{i}" for i in range(300))
RELOAD_RATE = 25
# The saved-state test's reply: about 2 s at DEMO_RATE.
SAVED_ANSWER = " ".join(f"saved{i}" for i in range(60))
SAVED_INPUT = "Save me. "
FRONTEND_ANSWERS = (" ".join(f"sky{i}" for i in range(120)), " ".join(f"sea{i}" for i in range(120)))
# The compare test's three models and what each answers (about 3 s each at DEMO_RATE).
COMPARE_ANSWERS = {
    "gpt-4o-mini": ("Sunlight scatters off the small molecules of the air, blue light most of all.",
                    "Rayleigh scattering: the air scatters blue light more than red."),
    "gpt-4.1-mini": ("Air molecules scatter short wavelengths far more than long ones.",
                     "Rayleigh scattering: the air scatters short blue waves more than red ones."),
    "o4-mini": ("Blue light has a short wavelength; scattering grows as the wavelength shrinks.",
                "Because the air scatters blue light more strongly than red."),
}
# A long essay for the Stop test: at 20 tokens/s it would stream for about half a minute.
ESSAY = " ".join(f"Paragraph {i}: tea was traded, taxed, smuggled and argued about for centuries." for i in range(40))


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing() -> list[str]:
    missing = []
    if shutil.which("chromium") is None:
        missing.append("chromium (run `make chromium`: apt-get install -y chromium)")
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{package} (pip install -e '.[test]')")
    return missing


@pytest.fixture(scope="session")
def _requirements() -> None:
    missing = _missing()
    if missing:
        message = "browser tests need " + ", ".join(missing)
        if _ci():
            pytest.fail(message + " (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(message)


# ------------------------------------------------------------------------------------ notebooks


def _code(source: str) -> dict[str, Any]:
    return {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": source}


def _notebook(*sources: str) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}},
        "cells": [dict(_code(s), id=f"cell-{i}") for i, s in enumerate(sources)],
    }


TEST_NOTEBOOKS: dict[str, dict[str, Any]] = {
    # The Stop button on a slow stream, then a cell that must still run.
    "stop.ipynb": _notebook(
        'import os\nos.environ["JUPYTER_STREAM_DEMO_RATE"] = "20"  # before the demo server starts\n'
        "%load_ext jupyter_stream\n"
        "from jupyter_stream.demo import shared_server\n"
        f"shared_server().script('[[ ## essay ## ]]\\n' + {ESSAY!r} + '\\n\\n[[ ## completed ## ]]')",
        '%%stream "question -> essay"\nWrite about the history of tea.',
        'print("after stop, the kernel runs cells:", 6 * 7)',
    ),
    # A stream whose tab is closed mid-reply, then a cell queued behind it (Run All sent it before the close).
    "closetab.ipynb": _notebook(
        "%load_ext jupyter_stream\n"
        "from jupyter_stream.demo import shared_server\n"
        f"shared_server().script('[[ ## answer ## ]]\\n' + {CLOSE_TAB_ANSWER!r} + '\\n\\n[[ ## completed ## ]]')",
        '%%stream "question -> answer" --out closed_tab\nKeep talking while the tab closes.',
        'print("after the tab closed:", closed_tab.answer.split()[-1])',
    ),
    # A stream whose page is saved and reloaded mid-reply.
    "reload.ipynb": _notebook(
        "%load_ext jupyter_stream\n"
        "from jupyter_stream.demo import Reply, shared_server\n"
        "shared_server().script(Reply(\n"
        f"    content='[[ ## answer ## ]]\\n' + {RELOAD_ANSWER!r} + '\\n\\n[[ ## completed ## ]]',\n"
        f"    token_rate={RELOAD_RATE}))",
        '%%stream "question -> answer" --out reloaded\nKeep talking while the page reloads.',
    ),
    # A short stream whose notebook is saved with its widget state; the last cell tells whether the end went
    # by reference (a page said hello) and whether the kernel's widget holds the text. Its input is bigger
    # than the inspector syncs (180 kB): the page loads it when the inspector opens, the saved state does not.
    "saved.ipynb": _notebook(
        "%load_ext jupyter_stream\n"
        "from jupyter_stream.demo import shared_server\n"
        f"shared_server().script('[[ ## answer ## ]]\\n' + {SAVED_ANSWER!r} + '\\n\\n[[ ## completed ## ]]')\n"
        f"big = {SAVED_INPUT!r} * 20_000",
        '%%stream "question -> answer" --out saved\n{big}',
        "def _final_by_ref():\n"
        "    from ipywidgets.widgets.widget import _instances\n"
        "    [w] = [w for w in list(_instances.values()) if type(w).__name__ == 'StreamWidget']\n"
        "    return f'{w.final_by_ref is not None} {[p[\"text\"] for p in w.panes] == [saved.answer]}'",
    ),
    # Other front ends (Notebook 7, Voila): a stream in a cell, then one with --background.
    "frontends.ipynb": _notebook(
        "%load_ext jupyter_stream\n"
        "from jupyter_stream.demo import shared_server\n"
        f"shared_server().script('[[ ## answer ## ]]\\n' + {FRONTEND_ANSWERS[0]!r} + '\\n\\n[[ ## completed ## ]]',\n"
        f"                       '[[ ## answer ## ]]\\n' + {FRONTEND_ANSWERS[1]!r} + '\\n\\n[[ ## completed ## ]]')",
        '%%stream "question -> answer"\nWhy is the sky blue?',
        '%%stream "question -> answer" --background\nAnd the sea?',
    ),
    # Every text the widget shows, for the contrast check in each theme: a finished stream (Markdown too, with
    # code), its status log, prediction and inspector, and a failed one (its error text).
    "themes.ipynb": _notebook(
        "%load_ext jupyter_stream\n"
        "from jupyter_stream.demo import Fault, shared_server\n"
        "shared_server().script('[[ ## answer ## ]]\\nSome *text* with `code` and a [link](x).\\n\\n"
        "```\\nprint(1)\\n```\\n\\n[[ ## completed ## ]]',\n"
        "                       Fault('status', status=400, body={'error': {'message': 'bad request'}}))",
        '%%stream "question -> answer" --markdown\nShow me everything.',
        '%%stream "question -> answer"\nAnd fail.',
    ),
    # A comparison of three models (one widget, a column each, the diff at the end), then one of three slow
    # variants stopped by its one Stop button, then the count of the requests the Stop closed; last, a cell the
    # test runs again (its widget then offers the diff with its previous run).
    "compare.ipynb": _notebook(
        "%load_ext jupyter_stream\n"
        "import jupyter_stream as js\n"
        "from jupyter_stream.demo import Reply, shared_server\n"
        "server = shared_server()\n"
        "js.configure(lm=js.LM('gpt-4o-mini', base_url=server.url, api_key='demo', cache=False))\n"
        f"for model, (reasoning, answer) in {COMPARE_ANSWERS!r}.items():\n"
        "    server.script(f'[[ ## reasoning ## ]]\\n{reasoning}\\n\\n[[ ## answer ## ]]\\n{answer}\\n\\n"
        "[[ ## completed ## ]]', model=model)\n"
        "for model in ('slow-a', 'slow-b', 'slow-c'):\n"
        f"    server.script(Reply(content='[[ ## essay ## ]]\\n' + {ESSAY!r} + '\\n\\n[[ ## completed ## ]]', "
        "token_rate=20), model=model)",
        '%%stream "question -> reasoning, answer" --compare model=gpt-4o-mini,gpt-4.1-mini,o4-mini --out cmp\n'
        "Why is the sky blue?",
        '%%stream "question -> essay" --compare model=slow-a,slow-b,slow-c\nWrite about the history of tea.',
        "server.wait_idle(10)\nprint('closed early:', server.stream_closed_early)",
        '%%stream "question -> answer" --model unscripted\nRun me twice.',
    ),
    # Markup in the model's reply, in plain and in Markdown panes.
    "hostile.ipynb": _notebook(
        "%load_ext jupyter_stream\n"
        "from jupyter_stream.demo import shared_server\n"
        f"HOSTILE = {HOSTILE!r}\n"
        "shared_server().script(HOSTILE, HOSTILE)",
        '%%stream "question -> answer"\nSay something hostile.',
        '%%stream "question -> answer" --markdown\nSay something hostile in Markdown.',
    ),
}


# ---------------------------------------------------------------------------------- JupyterLab


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), "utf-8")


class Lab:
    """A running JupyterLab server: its URL, token and notebook dir, plus the page helpers."""

    def __init__(self, url: str, token: str, notebook_dir: Path, runtime_dir: Path) -> None:
        self.url, self.token, self.notebook_dir, self.runtime_dir = url, token, notebook_dir, runtime_dir

    def api(self, method: str, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"},
            data=None if body is None else json.dumps(body).encode(),
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Delete every session (and so its kernel): a finished test leaves nothing running."""
        try:
            for session in self.api("GET", "/api/sessions"):
                self.api("DELETE", f"/api/sessions/{session['id']}")
        except (OSError, urllib.error.URLError, ValueError):
            pass

    def kernel_id(self, notebook: str) -> str:
        """The id of the kernel of ``notebook``'s session."""
        ids = [s["kernel"]["id"] for s in self.api("GET", "/api/sessions") if s.get("path") == notebook]
        assert len(ids) == 1, f"expected one session for {notebook}, got {ids}"
        return ids[0]

    def kernel_client(self, kernel_id: str) -> Any:
        """A jupyter_client ``BlockingKernelClient`` on the same kernel as the page (from its connection file):
        it sees the kernel's iopub and can run cells, with or without a page open. Call ``stop_channels()``."""
        from jupyter_client import BlockingKernelClient

        kc = BlockingKernelClient(connection_file=str(self.runtime_dir / f"kernel-{kernel_id}.json"))
        kc.load_connection_file()
        kc.start_channels()
        return kc

    def open(self, page: Any, notebook: str, timeout: float = 60) -> None:
        """Open ``notebook`` (ignoring any saved workspace) and wait for its kernel to be idle."""
        page.goto(f"{self.url}/lab/tree/{notebook}?token={self.token}&reset")
        # Not `.jp-Notebook-ExecutionIndicator[data-status=idle]`: it shows before the kernel exists.
        page.get_by_text(IDLE, exact=True).wait_for(timeout=timeout * 1000)

    @staticmethod
    def run_all(page: Any) -> None:
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

    @staticmethod
    def cell(page: Any, source_start: str) -> Any:
        """The notebook cell whose source contains ``source_start`` (CodeMirror's text)."""
        return page.locator(".jp-Notebook .jp-Cell").filter(
            has=page.locator(".jp-InputArea .cm-content", has_text=source_start)
        )


def copy_quickstart(folder: Path) -> None:
    """The quickstart into ``folder`` with the recordings its replay cell reads (a path relative to the
    notebook's folder, the kernel's working directory)."""
    shutil.copy(QUICKSTART, folder / QUICKSTART.name)
    shutil.copytree(RECORDINGS, folder / RECORDINGS.name)


def isolated_env(home: Path) -> dict[str, str]:
    """The environment of a Jupyter server (or any host) under test: HOME, Jupyter, IPython and XDG dirs all
    in ``home``, no API key, the demo LM at ``DEMO_RATE``, this Python's scripts first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "OPENAI_", "IPYTHON", "XDG_"))}
    env.update(
        HOME=str(home),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(home / "ipython"),
        XDG_CONFIG_HOME=str(home / "xdg-config"),
        XDG_CACHE_HOME=str(home / "xdg-cache"),
        XDG_DATA_HOME=str(home / "xdg-data"),
        JUPYTER_STREAM_DEMO_RATE=DEMO_RATE,
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # DSPy's litellm: no price-list download at import
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


# Package scope, not session: while sync Playwright is open, asyncio sees a running loop in this thread
# and every later pytest-asyncio test would fail ("Runner.run() cannot be called from a running event
# loop"); the server and the browser end when tests/browser is done.
@pytest.fixture(scope="package")
def lab(_requirements, tmp_path_factory):
    """One JupyterLab server for all the browser tests."""
    base = tmp_path_factory.mktemp("jupyterlab")
    home, notebooks, workspaces = base / "home", base / "notebooks", base / "workspaces"
    for d in (home, notebooks, workspaces):
        d.mkdir()
    copy_quickstart(notebooks)
    shutil.copy(DSPY_NOTEBOOK, notebooks / DSPY_NOTEBOOK.name)
    for name, nb in TEST_NOTEBOOKS.items():
        _write_json(notebooks / name, nb)

    env = isolated_env(home)
    settings = home / "config" / "lab" / "user-settings" / "@jupyterlab"
    # Every cell in the DOM (no virtual scrolling), and no news/update toasts over the page.
    _write_json(settings / "notebook-extension" / "tracker.jupyterlab-settings", {"windowingMode": "none"})
    _write_json(
        settings / "apputils-extension" / "notification.jupyterlab-settings",
        {"fetchNews": "false", "checkForUpdates": False},
    )

    port, token = free_port(), secrets.token_hex(16)
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = base / "jupyterlab.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", f"--IdentityProvider.token={token}",
            f"--port={port}", "--ServerApp.port_retries=0", "--ip=127.0.0.1", "--allow-root",
            f"--notebook-dir={notebooks}", f"--LabApp.workspaces_dir={workspaces}",
        ],
        env=env, cwd=notebooks, stdout=log, stderr=subprocess.STDOUT,
    )
    server = Lab(f"http://127.0.0.1:{port}", token, notebooks, home / "runtime")
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
            try:
                server.api("GET", "/api/status")
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer in 60 s:\n{log_path.read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)
        yield server
    finally:
        server.shutdown_kernels()
        # SIGINT twice: the first asks "Shutdown this Jupyter server (y/[n])?", the second confirms.
        for _ in range(2):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                time.sleep(0.3)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        shutil.copy(log_path, ARTIFACTS / "jupyterlab.log")


# ------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="package")
def browser(_requirements):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


_REPORTS = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def docs_screenshot(locator: Any, name: str) -> Path:
    """A screenshot of ``locator`` in test-artifacts/``name``; the committed copy in docs/ is written when
    missing and refreshed only on request (``JPS_UPDATE_SCREENSHOTS``: its stats differ per run)."""
    locator.page.mouse.move(0, 0)
    locator.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    locator.screenshot(path=str(shot), animations="disabled")
    docs = ROOT / "docs" / name
    if not docs.exists() or os.environ.get("JPS_UPDATE_SCREENSHOTS"):
        docs.parent.mkdir(exist_ok=True)
        shutil.copy(shot, docs)
    return shot


@contextlib.contextmanager
def recorded_page(request, browser, *, width: int = 1280, height: int = 900):
    """A fresh context and page that records its console (``page.console_log``); afterwards a screenshot in
    ``test-artifacts/`` (and on failure the console log). For any browser test, JupyterLab or not."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    console: list[str] = []
    pg.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
    pg.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
    pg.on("dialog", lambda d: (console.append(f"[dialog] {d.type}: {d.message}"), d.dismiss()))
    pg.console_log = console  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        reports = request.node.stash.get(_REPORTS, {})
        failed = any(r.failed for r in reports.values())
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        ARTIFACTS.mkdir(exist_ok=True)
        for stale in (f"{name}.png", f"{name}-FAILED.png", f"{name}-FAILED.console.txt"):
            (ARTIFACTS / stale).unlink(missing_ok=True)
        shot = ARTIFACTS / (f"{name}-FAILED.png" if failed else f"{name}.png")
        try:
            pg.screenshot(path=str(shot), full_page=True)
        except Exception as e:  # noqa: BLE001 - a screenshot must not hide the test's own result
            console.append(f"[screenshot failed] {e}")
        if failed:
            (ARTIFACTS / f"{name}-FAILED.console.txt").write_text("\n".join(console), "utf-8")
        context.close()


@pytest.fixture
def page(request, browser, lab):
    """A recorded page (see :func:`recorded_page`) in JupyterLab's browser; its kernels shut down afterwards."""
    try:
        with recorded_page(request, browser) as pg:
            yield pg
    finally:
        lab.shutdown_kernels()
