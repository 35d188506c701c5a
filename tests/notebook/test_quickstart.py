"""The quickstart notebook runs top to bottom on the demo LM with no key, in a real kernel (nbclient)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jupyter_stream.notebook.wire import resolve_text

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "01_quickstart.ipynb"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_before = dict(os.environ)
    os.environ.pop("OPENAI_API_KEY", None)
    os.environ["JUPYTER_STREAM_DEMO_RATE"] = "500"
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return nb


def test_runs_without_errors(executed):
    for cell in executed.cells:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", out
    stderr = "".join(
        o.get("text", "") for c in executed.cells for o in c.get("outputs", []) if o.get("name") == "stderr"
    )
    assert "built-in demo LM" in stderr


def test_widgets_hold_the_streamed_fields_and_the_prediction(executed):
    states = executed.metadata["widgets"][WIDGET_STATE]["state"]
    streams = [s["state"] for s in states.values() if "panes" in s["state"]]
    done = [s for s in streams if s["status"] == "done"]
    assert len(done) >= 5
    titles = {s["title"] for s in done}
    assert {"question -> reasoning, answer", "pipeline", "researcher"} <= titles
    references = 0
    for s in done:
        fields = s["prediction"]["fields"]
        assert s["panes"], s["title"]
        for pane in s["panes"]:
            assert pane["done"] is True
            assert pane["text"].strip(), (s["title"], pane["key"])
            if pane["field"] in fields:  # a field of the final prediction: the pane holds exactly its value,
                value = fields[pane["field"]]  # so the saved state holds it once (short texts: as they are)
                assert value in ({"$pane": pane["key"]}, pane["text"]), (s["title"], pane["key"], value)
                assert resolve_text(value, s["panes"]) == pane["text"]
                references += value == {"$pane": pane["key"]}
    assert references >= 5
    pipeline = next(s for s in done if s["title"] == "pipeline")
    assert [p["key"] for p in pipeline["panes"]] == ["draft.predict.paragraph", "polish.polished"]
    researcher = next(s for s in done if s["title"] == "researcher")
    assert researcher["status_log"] == [
        "Calling tool search...",
        "Tool calling finished! Querying the LLM with tool calling results...",
        "Asking demo...",
        "The model answered.",
    ]
    inspected = next(s for s in done if s["title"] == "question -> answer")
    call = inspected["lm_calls"][0]
    assert call["messages"][0]["role"] == "system" and "JSON" in call["messages"][0]["content"]
    raw = resolve_text(call["raw"], inspected["panes"])  # the reply, its field values by reference to the panes
    assert isinstance(raw, str) and raw.lstrip().startswith("{")
    assert json.loads(raw)["answer"] == next(p["text"] for p in inspected["panes"] if p["field"] == "answer")


def test_finished_cells_carry_a_static_html_snapshot(executed):
    sky = next(c for c in executed.cells if c.cell_type == "code" and c.source.startswith('%%stream "question -> reasoning'))
    """The snapshot is an output of its own beside the widget's (nbconvert would prefer a widget view over
    any HTML in its bundle), naming the widget it stands for, whose view hides it where the widget shows."""
    widget_out, snapshot_out = [o for o in sky.outputs if o["output_type"] == "display_data"]
    assert "text/html" not in widget_out["data"] and "application/vnd.jupyter.widget-view+json" not in snapshot_out["data"]
    html = snapshot_out["data"]["text/html"]
    assert ">answer<" in html and "Why is the sky blue?" in html.replace("&quot;", '"')
    model_id = widget_out["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    uid = executed.metadata["widgets"][WIDGET_STATE]["state"][model_id]["state"]["_uid"]
    assert f'class="jps-snapshot" data-jps-uid="{uid}"' in html
    assert f'.jp-OutputArea:has(.jps-widget[data-jps-uid="{uid}"])' in html
