"""The quickstart notebook runs top to bottom on the demo LM with no key, in a real kernel (nbclient), in its
own folder (as Jupyter runs it: the replay cell's recording is a path relative to it)."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from jupyter_stream.notebook.wire import resolve_text

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "01_quickstart.ipynb"
RECORDING = NOTEBOOK.parent / "recordings" / "sky.jsonl"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
REPLAY_CELL = 'view = js.show(js.replay("recordings/sky.jsonl"))'
# Run by the test around the replay cell (and taken out again): what reached the kernel's demo LM server, the
# only LM there is (no key in the environment), before and after the replay.
PROBE = ("from jupyter_stream.demo import shared_server as _demo\n"
         "_lm_traffic = lambda: [len(_demo().requests), _demo().connections_opened]\n")
PROBE_BEFORE = PROBE + "_before_replay = _lm_traffic()"
PROBE_AFTER = "import json\nprint(json.dumps([_before_replay, _lm_traffic()]))"


@pytest.fixture(scope="module")
def run():
    """The executed notebook (the probe cells taken out) and what the probes printed."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (at,) = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith(REPLAY_CELL)]
    before, after = nbformat.v4.new_code_cell(PROBE_BEFORE), nbformat.v4.new_code_cell(PROBE_AFTER)
    nb.cells[at:at + 1] = [before, nb.cells[at], after]
    env_before = dict(os.environ)
    os.environ.pop("OPENAI_API_KEY", None)
    os.environ["JUPYTER_STREAM_DEMO_RATE"] = "500"
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True,
                                resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    for probe in (before, after):
        assert not [o for o in probe.outputs if o["output_type"] == "error"], probe.outputs
    nb.cells = [c for c in nb.cells if c is not before and c is not after]
    return nb, "".join(o.get("text", "") for o in after.outputs if o["output_type"] == "stream")


@pytest.fixture(scope="module")
def executed(run):
    return run[0]


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
    assert len(streams) == 8
    done = [s for s in streams if s["status"] == "done"]
    assert len(done) >= 7  # all but perhaps the --background one (ended after its cell: not recorded)
    titles = {s["title"] for s in done}
    assert {"question -> reasoning, answer", "pipeline", "researcher", "Predict(question -> reasoning, answer)"} <= titles
    references = 0
    for s in done:
        # A comparison's predictions are its variants' (test_the_compare_cell_...); its panes are checked here too.
        fields = s["prediction"]["fields"] if not s.get("variants") else {}
        assert s["panes"], s["title"]
        for pane in s["panes"]:
            assert pane["done"] is True
            assert pane["text"].strip(), (s["title"], pane["key"])
            if pane["field"] in fields:  # a field of the final prediction: the pane holds exactly its value,
                value = fields[pane["field"]]  # so the saved state holds it once (short texts: as they are)
                assert value in ({"$pane": pane["key"]}, pane["text"]), (s["title"], pane["key"], value)
                assert resolve_text(value, s["panes"]) == pane["text"]
                references += value == {"$pane": pane["key"]}
    assert references >= 6
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


def test_the_replay_cell_plays_the_recording_with_no_lm_call(run):
    """Section 8 plays ``recordings/sky.jsonl`` back: the widget ends done holding exactly the recorded run
    (panes, prediction, the recorded LM call in the inspector), the cell's answer is the recorded one, and
    nothing reached the demo LM server meanwhile (no request, no connection)."""
    import jupyter_stream as js

    executed, traffic = run
    (recorded,) = js.load_recording(RECORDING)
    assert recorded.status == "ok" and recorded.title == "Predict(question -> reasoning, answer)"
    before, after = json.loads(traffic)
    assert before[0] >= 5 and after == before, traffic  # the demo LM had answered the cells above; not the replay

    states = executed.metadata["widgets"][WIDGET_STATE]["state"]
    (replayed,) = [s["state"] for s in states.values() if s["state"].get("title") == recorded.title]
    assert replayed["status"] == "done" and replayed["model_name"] == "demo"
    texts = {p["field"]: p["text"] for p in replayed["panes"]}
    assert texts == recorded.outputs() == {"reasoning": recorded.prediction.reasoning, "answer": recorded.prediction.answer}
    assert all(p["done"] for p in replayed["panes"])
    fields = replayed["prediction"]["fields"]
    assert {k: resolve_text(v, replayed["panes"]) for k, v in fields.items()} == texts
    (call,) = replayed["lm_calls"]
    assert [(m["role"], m["content"]) for m in call["messages"]] == [
        (m["role"], m["content"]) for m in recorded.lm_calls[0].messages]
    assert resolve_text(call["raw"], replayed["panes"]) == recorded.lm_calls[0].raw

    cell = next(c for c in executed.cells if c.cell_type == "code" and c.source.startswith(REPLAY_CELL))
    result = [o for o in cell.outputs if o["output_type"] == "execute_result"]
    assert [o["data"]["text/plain"] for o in result] == [repr(recorded.prediction.answer)]


def test_the_compare_cell_shows_three_adapters_side_by_side_with_the_diff(executed):
    """Section 7 compares the three adapters on the demo LM: one widget, a column per variant (each done, with
    its own stats and prediction), the word diff at the end, the static snapshot with a column each, and the
    `{variant: prediction}` dict in `adapters`."""
    states = executed.metadata["widgets"][WIDGET_STATE]["state"]
    (compared,) = [s["state"] for s in states.values() if s["state"].get("variants")]
    labels = ["adapter=chat", "adapter=json", "adapter=xml"]
    assert [v["label"] for v in compared["variants"]] == labels
    assert compared["status"] == "done" and all(v["status"] == "done" for v in compared["variants"])
    assert all(v["stats"]["tokens"] > 0 for v in compared["variants"])
    panes = {p["key"]: p["text"] for p in compared["panes"]}
    assert sorted(panes) == sorted(f"{label}\x1f.{field}" for label in labels for field in ("reasoning", "answer"))
    for v in compared["variants"]:  # by reference to the variant's own pane (the saved state holds the text once)
        assert v["prediction"]["fields"]["answer"] == {"$pane": f"{v['label']}\x1f.answer"}
    assert [(d["field"], d["b"]) for d in compared["diff"]] == [
        ("reasoning", "adapter=json"), ("reasoning", "adapter=xml"), ("answer", "adapter=json"), ("answer", "adapter=xml")]
    cell = next(c for c in executed.cells if c.cell_type == "code" and "--compare" in c.source)
    html = next(o["data"]["text/html"] for o in cell.outputs if o["output_type"] == "display_data" and "text/html" in o["data"])
    assert html.count('class="jps-snapshot-variant"') == 3 and "Diff" in html
    shown = next(c for c in executed.cells if c.cell_type == "code" and c.source.startswith("{variant: prediction.answer"))
    (result,) = [o for o in shown.outputs if o["output_type"] == "execute_result"]
    answers = ast.literal_eval(result["data"]["text/plain"])
    assert answers == {v["label"]: panes[f"{v['label']}\x1f.answer"] for v in compared["variants"]}
