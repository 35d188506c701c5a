"""The workbench in a real ipykernel (jupyter_client) against a loopback demo server: ``%%stream --compare`` (one
widget with a column per variant, each variant's own stats, the word diff at the end, one Stop for every
request) and the widget's "diff with the previous run of this cell"."""

from __future__ import annotations

import ast
import json
import re

import pytest

pytest.importorskip("jupyter_client")

from _kernel import (  # noqa: E402, F401
    LONG, execute, slow_server, start_kernel, stop_clicker, stop_kernel, stream_text, widget_comm_ids, widget_deltas,
)

from jupyter_stream.demo import Fault  # noqa: E402
from jupyter_stream.notebook.wire import VARIANT_SEP  # noqa: E402

REPLIES = {
    "small": "[[ ## reasoning ## ]]\nThe sky scatters blue light.\n\n[[ ## answer ## ]]\nRayleigh scattering.\n\n[[ ## completed ## ]]",
    "large": "[[ ## reasoning ## ]]\nSunlight meets the air.\n\n[[ ## answer ## ]]\nRayleigh scattering of sunlight.\n\n[[ ## completed ## ]]",
    "tiny": "[[ ## reasoning ## ]]\nShort.\n\n[[ ## answer ## ]]\nScattering.\n\n[[ ## completed ## ]]",
}
LABELS = ["model=small", "model=large", "model=tiny"]


@pytest.fixture(scope="module")
def kernel(slow_server):
    km, kc = start_kernel(slow_server.url)
    yield km, kc
    stop_kernel(km, kc)


def _updates(msgs):
    """The state of every widget trait update a cell sent, in order."""
    return [m["content"]["data"]["state"] for _, m in msgs
            if m["msg_type"] == "comm_msg" and m["content"]["data"].get("method") == "update"]


def _last(msgs, name):
    values = [s[name] for s in _updates(msgs) if name in s]
    assert values, f"no update of {name}"
    return values[-1]


def test_three_variants_stream_in_one_widget_with_columns_stats_and_the_diff(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    for model, reply in REPLIES.items():
        slow_server.script(reply, model=model)
    reply, msgs = execute(kc, '%%stream "question -> reasoning, answer" --compare model=small,large,tiny --out cmp\n'
                              "Why is the sky blue?")
    assert reply["content"]["status"] == "ok", reply
    assert len(widget_comm_ids(msgs)) == 1  # ONE widget for the three variants
    assert sorted(r["model"] for r in slow_server.requests) == ["large", "small", "tiny"]

    # The columns: every variant's panes, keyed by its label; the text of each is its own model's reply.
    texts: dict[str, str] = {}
    for _, batch in widget_deltas(msgs):
        for key, text, _done in batch["items"]:
            texts[key] = texts.get(key, "") + text
    for label, model in zip(LABELS, REPLIES):
        assert texts[f"{label}{VARIANT_SEP}.answer"] == REPLIES[model].split("[[ ## answer ## ]]\n")[1].split("\n\n")[0]
    # Each variant's own live stats rode in the batches (vstats), beside the comparison's.
    vstats = [b["vstats"] for _, b in widget_deltas(msgs) if "vstats" in b]
    assert vstats and set().union(*vstats) <= set(LABELS)
    final = _last(msgs, "variants")
    assert [v["label"] for v in final] == LABELS
    assert [v["status"] for v in final] == ["done"] * 3
    assert [v["model"] for v in final] == ["small", "large", "tiny"]
    assert all(v["stats"]["tokens"] > 0 and v["stats"]["ttft"] is not None for v in final)
    assert final[0]["prediction"]["fields"]["answer"] == "Rayleigh scattering."
    # The word diff, field by field, against the first variant.
    diff = {(d["field"], d["b"]): d["ops"] for d in _last(msgs, "diff")}
    assert diff[("answer", "model=large")] == [["=", "Rayleigh scattering"], ["+", " of sunlight"], ["=", "."]]
    assert ("answer", "model=tiny") in diff and ("reasoning", "model=large") in diff
    assert _last(msgs, "status") == "done"
    # The static snapshot has a column per variant (model output escaped).
    html = [m["content"]["data"]["text/html"] for _, m in msgs if m["msg_type"] == "update_display_data"][-1]
    assert html.count('class="jps-snapshot-variant"') == 3 and "<del>" not in html.split("Diff")[0]
    assert "<ins> of sunlight</ins>" in html

    # `_` and --out hold {label: prediction} with its stats and diff.
    reply, out = execute(kc, "import json\nprint(json.dumps({k: v.answer for k, v in cmp.items()}))\n"
                         "print(_ is cmp, cmp.diff.changed, sorted(cmp.stats) == sorted(cmp))")
    lines = stream_text(out).splitlines()
    assert json.loads(lines[0]) == {"model=small": "Rayleigh scattering.", "model=large": "Rayleigh scattering of sunlight.",
                                    "model=tiny": "Scattering."}
    assert lines[1] == "True True True"


def test_a_failing_variant_shows_its_error_in_its_column_and_the_others_finish(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    slow_server.script(REPLIES["small"], model="small")
    slow_server.script(Fault("status", status=400), model="broken")
    reply, msgs = execute(kc, '%%stream "question -> reasoning, answer" --compare model=small,broken\nWhy?')
    assert reply["content"]["status"] == "ok", reply  # the cell does not raise
    final = {v["label"]: v for v in _last(msgs, "variants")}
    assert final["model=small"]["status"] == "done"
    assert final["model=broken"]["status"] == "error" and "400" in final["model=broken"]["error"]
    reply, out = execute(kc, "print(type(_['model=broken']).__name__, _['model=small'].answer)")
    assert stream_text(out).strip() == "LMError Rayleigh scattering."


def test_one_stop_stops_every_variant_and_closes_every_request(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    for model in ("a", "b", "c"):
        slow_server.script(LONG, model=model)
    sent = []
    reply, msgs = execute(kc, '%%stream "question -> answer" --compare model=a,b,c --out stopped\nHello?',
                          on_iopub=stop_clicker(kc, sent))
    assert len(sent) == 2, "no delta arrived to click Stop after"
    assert reply["content"]["status"] == "ok"
    assert msgs[-1][0] - sent[1] < 2.0  # handled while the cell ran
    assert slow_server.wait_idle(5.0)
    assert slow_server.stream_closed_early == 3  # every variant's request closed
    assert _last(msgs, "status") == "stopped"
    assert {v["status"] for v in _last(msgs, "variants")} == {"stopped"}
    reply, out = execute(kc, "print('stopped' in globals())")
    assert stream_text(out).strip() == "False"


def test_text_and_background_compare_and_the_mistakes_refused_in_one_line(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    slow_server.script(REPLIES["small"], model="small")
    slow_server.script(REPLIES["large"], model="large")
    reply, out = execute(kc, '%%stream "question -> reasoning, answer" --compare model=small,large --text\nWhy?')
    text = stream_text(out)
    assert reply["content"]["status"] == "ok"
    assert text.index("═══ model=small ═══") < text.index("═══ model=large ═══") < text.index("═══ diff ═══")
    assert "{+ of sunlight+}" in text

    slow_server.script(REPLIES["small"], model="small")
    slow_server.script(REPLIES["large"], model="large")
    reply, out = execute(kc, '%%stream "question -> reasoning, answer" --compare model=small,large --background '
                             "--out bg\nWhy?")
    assert reply["content"]["status"] == "ok"
    reply, out = execute(kc, "import asyncio\nfor _i in range(100):\n    if 'bg' in globals(): break\n"
                             "    await asyncio.sleep(0.1)\nprint(sorted(bg))")
    assert ast.literal_eval(stream_text(out).strip()) == ["model=large", "model=small"]

    for line, expected in [
        ('"question -> answer" --compare model=a,b --session s', "--session cannot be used with --compare"),
        ('"question -> answer" --compare model=a', "2 to 8"),
        ('"question -> answer" --compare colour=a,b', "colour"),
        ('"question -> answer" --compare instructions={nowhere},{also}', "nowhere"),
    ]:
        before = len(slow_server.requests)
        reply, out = execute(kc, f"%%stream {line}\nHi?")
        assert reply["content"]["status"] == "error", line
        message = reply["content"]["evalue"]
        assert expected in message and "\n" not in message, (line, message)
        assert len(slow_server.requests) == before  # refused before any request


def _execute_in_cell(kc, code, cell_id):
    """Run ``code`` as the front ends do, naming its cell (``metadata.cellId``)."""
    msgs = []
    msg = kc.session.msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                             "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
                         metadata={"cellId": cell_id})
    kc.shell_channel.send(msg)
    while True:
        m = kc.get_iopub_msg(timeout=60)
        if m["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            continue
        msgs.append((0, m))
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return msgs


def test_a_cell_run_again_shows_what_changed_since_its_previous_run(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    slow_server.script("[[ ## answer ## ]]\nParis is the capital.\n\n[[ ## completed ## ]]",
                       "[[ ## answer ## ]]\nParis.\n\n[[ ## completed ## ]]",
                       "[[ ## answer ## ]]\nLyon.\n\n[[ ## completed ## ]]")
    first = _execute_in_cell(kc, '%%stream "question -> answer"\nCapital of France?', "cell-a")
    assert not [s for s in _updates(first) if s.get("run_diff")]  # nothing to compare with yet
    # The same cell, edited: a new program (instructions in the signature) and a new input.
    second = _execute_in_cell(kc, '%%stream "question -> answer: str"\nCapital of France, in one word?', "cell-a")
    run_diff = _last(second, "run_diff")
    assert run_diff["changed"] is True and re.fullmatch(r"#\d+ → #\d+", run_diff["title"]), run_diff
    blocks = {b["heading"]: b["pieces"] for b in run_diff["blocks"]}
    assert ["+", ", in one word"] in blocks["input question:"], blocks
    assert blocks["output answer:"] == [["=", "Paris"], ["-", " is the capital"], ["=", "."]], blocks
    prompt = [h for h in blocks if h.startswith("prompt, LM call 1")]
    assert prompt and any(op == "+" and "in one word" in text for h in prompt for op, text in blocks[h]), blocks
    # Another cell has its own history: its first run shows no diff, though a run came just before it.
    other = _execute_in_cell(kc, '%%stream "question -> answer"\nCapital of Italy?', "cell-b")
    assert not [s for s in _updates(other) if s.get("run_diff")]


def test_show_displays_a_comparison_from_code_and_awaits_its_result(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    slow_server.script(REPLIES["small"], model="small")
    slow_server.script(REPLIES["tiny"], model="tiny")
    reply, msgs = execute(kc, "c = js.Comparison(js.ChainOfThought('question -> answer'), {'question': 'Why?'},"
                              " variants='model=small,tiny')\n"
                              "view = js.show(c)\nresult = await view\nprint(sorted(result), result is c.result)")
    assert reply["content"]["status"] == "ok", reply
    assert stream_text(msgs).strip() == "['model=small', 'model=tiny'] True"
    assert len(widget_comm_ids(msgs)) == 1
    final = _last(msgs, "variants")
    assert [(v["label"], v["status"]) for v in final] == [("model=small", "done"), ("model=tiny", "done")]
    assert final[1]["prediction"]["fields"]["answer"] == "Scattering."
