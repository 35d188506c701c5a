"""``make demo`` from a fresh clone, as root and as a normal user (the README's first command).

Each case clones this repository's HEAD (``git clone`` of the checkout this file lives in: committed
changes only) into a temporary directory and runs ``make demo`` there with ``CI`` and ``NO_LAB`` unset,
``HOME`` a fresh temporary directory and ``TMPDIR`` inside it, so that it sets up ``.venv`` from PyPI,
streams the demo program in the terminal and then starts JupyterLab on the quickstart notebook.

JupyterLab is made to stop by itself through the user's own Jupyter config (``$HOME/.jupyter``), not
through the Makefile: no browser, loopback, a port of its own choosing (``port = 0``: the URL it prints
says which) and a known token. The test waits for that URL, asks the server for its status, the lab
page and the quickstart notebook, then sends ``POST /api/shutdown``: ``jupyter lab`` then exits 0, and
so must ``make demo``. The config does not set ``allow_root``: as root, JupyterLab starts only because
the Makefile passes ``--allow-root``.

The normal user is the current user when the tests run as a normal user, else ``nobody`` (through
``setpriv``), on a clone and a ``HOME`` chowned to it. Both cases run at the same time, each with its
own full ``pip install`` (PyPI's responses reach pip here without caching headers, so a shared pip
cache stays empty, and the install's time is spent unpacking, not downloading).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jupyter_stream.demo.default import NOTICE

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/01_quickstart.ipynb"
QUESTION = "Why is the sky blue?"
# What the demo LM answers to the program `make demo` runs (jupyter_stream/demo/responder.py).
ANSWER = re.compile(rf'The answer to "{re.escape(QUESTION)}" is the demo value [0-9a-f]{{6}}\.')
REASONING = re.compile(rf'Let me think step by step about "{re.escape(QUESTION)}"\. .*\(ref [0-9a-f]{{6}}\)\.')
TOKEN = "make-demo-test-token"
LAB_URL = re.compile(r"(http://127\.0\.0\.1:\d+)/lab\?token=")
# The install, the demo run and JupyterLab's start (measured here: 120-225 s, two at once on two busy
# cores); then at most SHUTDOWN_TIMEOUT for make to exit after /api/shutdown (measured: 1-3 s).
START_TIMEOUT = 600.0
SHUTDOWN_TIMEOUT = 60.0

# Variables that would change what `make demo` does (Makefile variables, CI/NO_LAB, a key that turns the
# demo LM off, another Python environment) or make it write outside the case's temporary directory.
DROPPED_ENV = {
    "CI", "NO_LAB", "PYTHON", "VENV", "VENV30", "DSPY_OLDEST", "MAKEFLAGS", "MFLAGS", "MAKELEVEL",
    "MAKEOVERRIDES", "OPENAI_API_KEY", "OPENAI_BASE_URL", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME",
    "PYTHONUSERBASE", "IPYTHONDIR", "PIP_CACHE_DIR", "PIP_USER", "PIP_TARGET", "PIP_PREFIX",
}
DROPPED_PREFIXES = ("JUPYTER", "XDG_")  # JUPYTER_*: also JUPYTER_STREAM_DEMO_RATE, the demo LM's pace
# Set when the test run is interrupted: the cases stop waiting and end their make.
ABORT = threading.Event()


@dataclass
class Run:
    """What one `make demo` did."""

    name: str
    uid: int
    skip: str | None = None
    error: str | None = None
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    lab_url: str | None = None
    http: dict[str, object] = field(default_factory=dict)
    leftover: bool = False
    times: dict[str, float] = field(default_factory=dict)

    def tails(self) -> str:
        return (f"\n--- {self.name}: make demo stdout (end) ---\n{self.stdout[-3000:]}"
                f"\n--- {self.name}: make demo stderr (end) ---\n{self.stderr[-5000:]}")


def _env(home: Path, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in DROPPED_ENV and not k.startswith(DROPPED_PREFIXES)}
    env.update(HOME=str(home), TMPDIR=str(tmp), JUPYTER_CONFIG_DIR=str(home / ".jupyter"))
    return env


def _http(method: str, url: str) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {TOKEN}"},
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def _first_answer(url: str, *, within: float = 30.0) -> tuple[int, str]:
    """GET ``url`` once the server listens. jupyter_server (2.21) prints its URL before its event loop
    binds the port (``io_loop.add_callback(self._bind_http_server)``), so the first connection can be
    refused for a moment; a refusal that lasts ``within`` seconds is raised."""
    deadline = time.monotonic() + within
    while True:
        try:
            return _http("GET", url)
        except urllib.error.URLError as e:
            if not isinstance(e.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stop_group(proc: subprocess.Popen) -> bool:
    """End what is left of make's process group; True if anything was left."""
    leftover = False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        leftover = True
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return leftover
            time.sleep(0.1)
    if proc.poll() is None:
        proc.wait()
    return leftover


def _make_demo(base: Path, name: str, user: pwd.struct_passwd) -> Run:
    run = Run(name, user.pw_uid)
    t0 = time.monotonic()
    case = base / name
    home, tmp, repo = case / "home", case / "home" / "tmp", case / "repo"
    (home / ".jupyter").mkdir(parents=True)
    tmp.mkdir()
    # The user's Jupyter config: no browser, loopback, any free port, a known token (no allow_root).
    (home / ".jupyter" / "jupyter_server_config.json").write_text(json.dumps({
        "ServerApp": {"open_browser": False, "ip": "127.0.0.1", "port": 0, "port_retries": 0},
        "IdentityProvider": {"token": TOKEN},
    }))
    # --no-hardlinks: the clone is chowned below, and hard links would chown this checkout's objects.
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(repo)], check=True,
                   capture_output=True, timeout=120)
    run.times["clone"] = time.monotonic() - t0

    cmd = ["make", "demo"]
    if user.pw_uid != os.geteuid():
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(case)], check=True, timeout=60)
        cmd = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *cmd]
        probe = subprocess.run([*cmd[:-2], "sh", "-c", 'test -w "$HOME" && test -w .'], cwd=repo,
                               env=_env(home, tmp), capture_output=True, timeout=30)
        if probe.returncode != 0:
            run.skip = f"{user.pw_name} cannot write its HOME and clone under {base} (a parent is closed to it)"
            return run

    out_path, err_path = case / "make.out", case / "make.err"
    t1 = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=repo, env=_env(home, tmp), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True)
    try:
        deadline = t1 + START_TIMEOUT
        while proc.poll() is None and run.lab_url is None:
            if ABORT.is_set():
                run.error = "interrupted"
                break
            if time.monotonic() > deadline:
                run.error = f"JupyterLab did not print its URL within {START_TIMEOUT:.0f} s of `make demo`"
                break
            if "install+answer" not in run.times and "── prediction ──" in out_path.read_text("utf-8", "replace"):
                run.times["install+answer"] = time.monotonic() - t1
            found = LAB_URL.search(err_path.read_text("utf-8", "replace"))
            if found:
                run.lab_url = found.group(1)
                run.times["lab URL"] = time.monotonic() - t1
            else:
                time.sleep(0.2)
        if run.lab_url is not None:
            run.http["status"] = _first_answer(f"{run.lab_url}/api/status")
            run.http["lab"] = _http("GET", f"{run.lab_url}/lab")
            run.http["notebook"] = _http("GET", f"{run.lab_url}/api/contents/{Path(NOTEBOOK).name}?content=0")
            t2 = time.monotonic()
            run.http["shutdown"] = _http("POST", f"{run.lab_url}/api/shutdown")
            try:
                proc.wait(timeout=SHUTDOWN_TIMEOUT)
                run.times["shutdown -> exit"] = time.monotonic() - t2
            except subprocess.TimeoutExpired:
                run.error = f"make demo still ran {SHUTDOWN_TIMEOUT:.0f} s after POST /api/shutdown"
    except Exception as e:  # pragma: no cover - reported by the test
        run.error = f"{type(e).__name__}: {e}"
    finally:
        run.leftover = _stop_group(proc)
        run.returncode = proc.returncode
        run.times["total"] = time.monotonic() - t0
        run.stdout = out_path.read_text("utf-8", "replace")
        run.stderr = err_path.read_text("utf-8", "replace")
    return run


def _scratch() -> str | None:
    """/dev/shm when it has room: a .venv is ~40,000 files (0.8 GB), and deleting two of them from this
    machine's disk took ~30 s, against 1.5 s from memory; else the usual temporary directory."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    if st.f_flag & os.ST_NOEXEC or st.f_flag & os.ST_RDONLY or st.f_bavail * st.f_frsize < 4 << 30:
        return None
    return "/dev/shm"


def _normal_user() -> tuple[pwd.struct_passwd | None, str]:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()), ""
    if shutil.which("setpriv") is None:
        return None, "running as root and no setpriv to run make as a normal user"
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        return None, "running as root and no 'nobody' account to run make as a normal user"
    if user.pw_uid == 0:
        return None, "'nobody' is uid 0 here: no normal user to run make as"
    return user, ""


@pytest.fixture(scope="module")
def runs():
    """Both cases at once (each its own clone, HOME and install); {name: Run or skip reason}."""
    for tool in ("git", "make"):
        if shutil.which(tool) is None:
            pytest.skip(f"`make demo` needs {tool}, which is not installed")
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout: nothing to clone")
    cases: dict[str, pwd.struct_passwd] = {}
    results: dict[str, Run | str] = {}
    if os.geteuid() == 0:
        cases["root"] = pwd.getpwuid(0)
    else:
        results["root"] = "not running as root (uid 0): the root case cannot run"
    user, why = _normal_user()
    if user is None:
        results["user"] = why
    else:
        cases["user"] = user
    base = Path(tempfile.mkdtemp(prefix="js-make-demo-", dir=_scratch()))
    base.chmod(0o755)  # the normal user goes through it to its own directory
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(cases))) as pool:
            futures = {name: pool.submit(_make_demo, base, name, u) for name, u in cases.items()}
            try:
                for name, fut in futures.items():
                    results[name] = fut.result()
            except BaseException:  # Ctrl-C, or a case that could not start: end the other one too
                ABORT.set()
                raise
        for r in results.values():
            if isinstance(r, Run):
                print(f"\n{r.name} (uid {r.uid}): " + ", ".join(f"{k} {v:.1f} s" for k, v in r.times.items()))
        yield results
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _check(run: Run, *, as_root: bool) -> None:
    assert run.error is None, run.error + run.tails()
    assert run.returncode == 0, f"make demo exited {run.returncode}" + run.tails()
    assert not run.leftover, "processes of make demo were still running after it exited" + run.tails()
    out = run.stdout

    # The terminal part: the program streamed on the demo LM, fields then the prediction.
    assert '.venv/bin/jupyter-stream run "question -> reasoning, answer"' in out, run.tails()
    r, a, p = out.find("── reasoning ──\n"), out.find("── answer ──\n"), out.find("── prediction ──\n")
    assert -1 < r < a < p, "the streamed fields are missing or out of order" + run.tails()
    reasoning = out[r + len("── reasoning ──\n"):a].strip()
    answer = out[a + len("── answer ──\n"):p].strip()
    assert REASONING.fullmatch(reasoning), reasoning
    assert ANSWER.fullmatch(answer), answer
    assert out[p:].splitlines()[1:3] == [f"reasoning: {reasoning!r}", f"answer: {answer!r}"], out[p:]
    assert NOTICE in run.stderr, run.tails()

    # Then JupyterLab, started by the Makefile's lab target (with --allow-root only as root), served.
    lab_line = next((line for line in out.splitlines() if line.startswith(".venv/bin/jupyter lab")), None)
    assert lab_line is not None, "make demo did not run `jupyter lab`" + run.tails()
    assert out.index(lab_line) > p, "JupyterLab started before the terminal demo finished"
    expected = f".venv/bin/jupyter lab {'--allow-root ' if as_root else ''}{NOTEBOOK}"
    assert lab_line.split() == expected.split(), lab_line
    assert "Running as root is not recommended" not in run.stderr, run.tails()
    assert run.lab_url is not None, "JupyterLab never printed its URL" + run.tails()
    status, body = run.http["status"]
    assert status == 200 and json.loads(body)["started"], (status, body)
    status, body = run.http["lab"]
    assert status == 200 and "<title>JupyterLab</title>" in body, (status, body[:500])
    for extension in ('"@jupyter-widgets/jupyterlab-manager"', '"anywidget"'):  # the notebook's widgets render
        assert extension in body, f"JupyterLab runs without the {extension} extension"
    status, body = run.http["notebook"]  # the lab serves the quickstart notebook's folder
    assert status == 200 and json.loads(body)["type"] == "notebook", (status, body)
    assert run.http["shutdown"][0] == 200, run.http["shutdown"]
    assert "Shutting down on /api/shutdown request" in run.stderr, run.tails()


def _get(runs: dict, name: str) -> Run:
    r = runs[name]
    if isinstance(r, str):
        pytest.skip(r)
    if r.skip:
        pytest.skip(r.skip)
    return r


def test_make_demo_from_a_fresh_clone_as_root(runs):
    run = _get(runs, "root")
    assert run.uid == 0
    _check(run, as_root=True)


def test_make_demo_from_a_fresh_clone_as_a_normal_user(runs):
    run = _get(runs, "user")
    assert run.uid != 0
    _check(run, as_root=False)
