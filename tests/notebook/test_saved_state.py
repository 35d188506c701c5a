"""What a notebook run headless (nbclient, widget state saved) holds: a 2 MB input stays out of it."""

from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def test_a_two_megabyte_input_leaves_a_preview_in_the_saved_widget_state(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("JUPYTER_STREAM_DEMO_RATE", "0")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_stream\nbig = 'word ' * 400_000"),
        nbformat.v4.new_code_cell('%%stream "question -> answer" --out result\n{big}'),
        nbformat.v4.new_code_cell("print(len(result.answer) > 0)"),
    ]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute()
    assert nb.cells[2].outputs[0]["text"] == "True\n"
    saved = nbformat.writes(nb)
    assert len(saved) < 100_000, len(saved)  # the input alone is 2,000,000 characters
    states = [m["state"] for m in nb.metadata["widgets"][WIDGET_STATE]["state"].values() if "lm_calls" in m["state"]]
    (call,) = states[0]["lm_calls"]
    assert call["held"] > 2_000_000
    user = call["messages"][-1]
    assert user["content"].startswith("[[ ## question ## ]]\nword word") and user["cut"] > 1_990_000
