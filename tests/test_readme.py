"""The README's examples run as written, as a newcomer would paste them (on the demo LM, no key)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def _block_after(heading: str) -> str:
    text = README.read_text("utf-8")
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _run_block_after(heading: str) -> subprocess.CompletedProcess[str]:
    """The first Python block after ``heading``, run in a fresh interpreter on the demo LM (no key)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["JUPYTER_STREAM_DEMO_RATE"] = "0"
    return subprocess.run([sys.executable, "-c", _block_after(heading)], capture_output=True, text=True,
                          timeout=120, env=env)


def test_the_ten_line_example_streams_each_field_on_its_own_lines():
    proc = _run_block_after("## Ten lines")
    assert proc.returncode == 0, proc.stderr
    reasoning, answer_text, final = proc.stdout.split("\n\n")
    assert "Why is the sky blue?" in reasoning and "Why is the sky blue?" in answer_text
    assert final == f"answer: {answer_text}\n"


def test_the_compare_example_prints_each_variant_then_the_diff():
    proc = _run_block_after("## Compare variants")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line for line in lines if line.startswith("adapter=")] == ["adapter=chat", "adapter=json", "adapter=xml"]
    assert "── answer: adapter=chat → adapter=json ──" in lines
    assert "[-" in proc.stdout and "{+" in proc.stdout


def test_the_history_and_replay_example_runs_on_the_demo_lm(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["JUPYTER_STREAM_DEMO_RATE"] = "0"
    proc = subprocess.run([sys.executable, "-c", _block_after("## History, diff, record and replay")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, *rest = proc.stdout.splitlines()
    assert first.startswith("<Run #2 ok: Predict(question -> answer) in ") and first.endswith("1 LM call to demo>")
    text = "\n".join(rest)
    assert "prompt, LM call 1 (self), message 1 (system):" in text
    assert any(line.lstrip().startswith("+") and line.endswith("Answer with a full sentence.") for line in rest)
    assert (tmp_path / "capital.jsonl").exists() and "Capital of France?" in text
