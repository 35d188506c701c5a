"""notebooks/02_dspy.ipynb runs top to bottom on the demo LM with no key, in a real kernel (nbclient)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # the notebook tools are not in the oldest-DSPy environment
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "02_dspy.ipynb"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


@pytest.fixture(scope="module")
def executed():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_before = dict(os.environ)
    os.environ.pop("OPENAI_API_KEY", None)
    os.environ["JUPYTER_STREAM_DEMO_RATE"] = "500"
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    try:
        nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", store_widget_state=True).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return nb


def _outputs(nb, kind):
    return [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == kind]


def test_runs_without_errors_on_the_demo_lm(executed):
    assert _outputs(executed, "error") == []
    stderr = "".join(o.get("text", "") for o in _outputs(executed, "stream") if o.get("name") == "stderr")
    assert "built-in demo LM" in stderr


def test_each_react_step_has_its_own_panes_and_the_tools_ran(executed):
    states = executed.metadata["widgets"][WIDGET_STATE]["state"]
    streams = {s["state"]["title"]: s["state"] for s in states.values() if "panes" in s["state"]}
    agent = streams["agent"]
    assert agent["status"] == "done"
    groups = {p["predict"] for p in agent["panes"]}
    assert {"react", "react[2]", "react[3]", "extract.predict"} <= groups
    assert any("Calling tool search" in m for m in agent["status_log"])
    assert any("Calling tool lookup" in m for m in agent["status_log"])
    tool_names = next(c for c in executed.cells if "tool_name" in c.source and c.cell_type == "code")
    assert "['search', 'lookup', 'finish']" in tool_names.outputs[0]["data"]["text/plain"]


def test_the_loaded_program_sent_its_demos_and_every_stream_ended(executed):
    states = executed.metadata["widgets"][WIDGET_STATE]["state"]
    streams = {s["state"]["title"]: s["state"] for s in states.values() if "panes" in s["state"]}
    assert {"cot", "agent", "watched", "loaded"} <= set(streams)
    assert all(s["status"] == "done" for s in streams.values())
    messages = streams["loaded"]["lm_calls"][0]["messages"]
    assert any("What is 2 + 2?" in str(m.get("content")) for m in messages)
    printed = "".join(o.get("text", "") for o in _outputs(executed, "stream") if o.get("name") == "stdout")
    assert "predict.answer (call 1) is complete" in printed and "Prediction ->" in printed


def test_a_status_provider_shows_each_tool_observation(executed):
    states = executed.metadata["widgets"][WIDGET_STATE]["state"]
    watched = next(s["state"] for s in states.values() if s["state"].get("title") == "watched")
    observations = [m for m in watched["status_log"] if m.startswith("Observation: ")]
    assert observations == [
        "Observation: The encyclopedia says the Eiffel Tower stands in Paris (asked: Where is the Eiffel Tower?).",
        "Observation: Where is the Eiffel Tower?: a wrought-iron lattice tower on the Champ de Mars.",
    ]
    groups = {p["predict"] for p in watched["panes"]}
    assert {"react", "react[2]", "react[3]", "extract.predict"} <= groups
