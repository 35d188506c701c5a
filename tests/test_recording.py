"""Record and replay: runs written to JSON Lines with their timing, played again without an LM or a network."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import collect_fields

import jupyter_stream as js
from jupyter_stream._cli import main
from jupyter_stream.demo import Fault, Reply
from jupyter_stream.streaming.sink import pour

ANSWER = "[[ ## reasoning ## ]]\nIt is in France.\n\n[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
LONG = "[[ ## answer ## ]]\n" + " ".join(f"w{i}" for i in range(300)) + "\n\n[[ ## completed ## ]]"
KEY = "sk-test-SECRET-key-123"  # the lm fixture's key


def _record(path, lm, server, *replies, lm_events=True, program=None):
    server.script(*replies)
    program = program or js.ChainOfThought("question -> answer")
    with js.record(path) as rec:
        events = list(js.stream(program, None, {"question": "Capital of France?"}, lm_events=lm_events))
    assert rec.runs == 1
    return events


def test_record_then_replay_yields_the_same_events_in_order(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    events = _record(path, lm, server, Reply(content=ANSWER, reasoning="Think first."))
    again = list(js.replay(path, speed=0))
    assert [type(e) for e in again] == [type(e) for e in events]
    assert again[:-1] == events[:-1]  # the dataclass events, field for field
    assert again[-1] == events[-1] and again[-1].answer == "Paris"
    assert collect_fields(again) == collect_fields(events)


async def test_replay_async_and_into_a_sink(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    events = _record(path, lm, server, ANSWER)
    replay = js.replay(path, speed=0)
    assert [e async for e in replay][:-1] == events[:-1]
    out = io.StringIO()
    prediction = await pour(replay, js.TextRenderer(out, color=False), title=replay.title, model=replay.model)
    assert prediction.answer == "Paris" and "── predict.answer ──\nParis" in out.getvalue()
    assert replay.title == "ChainOfThought(question -> reasoning, answer)" and replay.model == "test-model"


def test_the_recording_holds_the_raw_deltas_and_event_times(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    _record(path, lm, server, Reply(content=ANSWER, chunks=["[[ ## reasoning ## ]]\nIt is", " in France.\n\n",
                                                           "[[ ## answer ## ]]\nPa", "ris\n\n[[ ## completed ## ]]"]))
    (run,) = js.load_recording(path)
    (call,) = run.lm_calls
    assert [text for _t, text in call.deltas] == ["[[ ## reasoning ## ]]\nIt is", " in France.\n\n",
                                                  "[[ ## answer ## ]]\nPa", "ris\n\n[[ ## completed ## ]]"]
    times = [t for t, _ in call.deltas] + [t for t, _ in run.events]
    assert all(0 <= t <= run.duration for t in times)
    assert [t for t, _ in run.events] == sorted(t for t, _ in run.events)
    assert call.raw == ANSWER and call.messages == server.requests[-1]["messages"]
    assert run.inputs == {"question": "Capital of France?"} and run.prediction.answer == "Paris"


def test_replay_keeps_the_recorded_pace_scaled_by_speed(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    _record(path, lm, server, Reply(content=ANSWER, token_rate=150))
    (run,) = js.load_recording(path)
    last = run.events[-1][0]
    assert last > 0.05  # ~20 tokens at 150/s
    for speed in (1.0, 4.0):
        started = time.perf_counter()
        list(js.replay(run, speed=speed))
        # A lower bound only: the events cannot come before their scaled times (a loaded machine only adds).
        assert time.perf_counter() - started >= last / speed


def test_a_replay_makes_no_request_and_needs_no_lm(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    _record(path, lm, server, ANSWER)
    requests = len(server.requests)
    js.configure(lm=None)
    assert [e for e in js.replay(path, speed=0)][-1].answer == "Paris"
    assert len(server.requests) == requests


def test_a_replay_in_a_fresh_process_without_any_network(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    _record(path, lm, server, ANSWER)
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise AssertionError('a replay opened a connection')\n"
        "socket.socket.connect = refuse; socket.socket.connect_ex = refuse; socket.create_connection = refuse\n"
        "import jupyter_stream as js\n"
        f"events = list(js.replay({str(path)!r}, speed=0))\n"
        "print(events[-1].answer, js.settings.current().lm)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(js.__file__).parent.parent)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Paris None"


def test_a_failed_run_replays_its_error_with_the_partial_text(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    server.script(Reply(content=LONG, fault=Fault("drop", after=12)))
    with js.record(path), pytest.raises(js.LMError) as original:
        list(js.stream(js.Predict("question -> answer"), None, {"question": "q"}))
    events = []
    with pytest.raises(js.LMError) as again:
        for event in js.replay(path, speed=0):
            events.append(event)
    assert str(again.value) == str(original.value) and again.value.partial == original.value.partial
    assert again.value.raw == original.value.raw and again.value is not original.value
    assert collect_fields(events)["self.answer"] == original.value.partial["answer"]


def test_a_stream_created_inside_the_block_and_read_after_it_is_recorded(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    server.script(ANSWER, ANSWER)
    with js.record(path) as rec:
        inside = js.stream(js.Predict("question -> answer"), None, {"question": "inside"})
    outside = js.stream(js.Predict("question -> answer"), None, {"question": "outside"})
    list(inside), list(outside)
    assert rec.runs == 1 and [r.inputs["question"] for r in js.load_recording(path)] == ["inside"]


async def test_streamify_runs_and_raw_chunks_are_recorded(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    server.script(ANSWER, ANSWER)
    listened = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    raw = js.streamify(js.Predict("question -> answer"))  # no listener: the raw chunks pass through
    with js.record(path):
        a = [e async for e in listened(question="q")]
        b = [e async for e in raw(question="q")]
    first, second = js.load_recording(path)
    assert first.kind == second.kind == "streamify"
    assert [e async for e in js.replay(first, speed=0)] == a
    again = [e async for e in js.replay(second, speed=0)]
    assert [type(e).__name__ for e in again] == [type(e).__name__ for e in b]
    assert [e.model_dump(exclude_unset=True) for e in again[:-1]] == [e.model_dump(exclude_unset=True) for e in b[:-1]]


def test_appending_to_a_recording(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    _record(path, lm, server, ANSWER)
    server.script(ANSWER)
    with js.record(path, append=True) as rec:
        list(js.stream(js.Predict("question -> answer"), None, {"question": "second"}))
    assert rec.runs == 2
    assert [r.label for r in js.load_recording(path)] == ["run.jsonl[0]", "run.jsonl[1]"]
    assert js.replay(path, run=-1).run.inputs == {"question": "second"}


def test_no_api_key_is_ever_written(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    server.script(ANSWER, ANSWER)
    keyed = lm.copy(extra_headers={"Authorization": f"Bearer {KEY}"}, api_key=KEY)
    with js.record(path), js.context(lm=keyed):
        list(js.stream(js.Predict("question -> answer"), None, {"question": "q"}, lm_events=True))
        list(js.stream(js.Predict("question -> answer"), None, {"question": "q", "lm": keyed}))  # an LM in the inputs
    text = path.read_text("utf-8")
    assert "test-model" in text and "SECRET" not in text and "Authorization" not in text


def test_the_demo_server_serves_a_recorded_call_again(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    _record(path, lm, server, Reply(content=ANSWER, reasoning="Hmm.", chunks=None))
    (recorded,) = js.load_recording(path)
    server.script(*[call.reply() for call in recorded.lm_calls])  # the user's own regression fixture
    again = tmp_path / "again.jsonl"
    with js.record(again):
        list(js.stream(js.ChainOfThought("question -> answer"), None, {"question": "Capital of France?"},
                       lm_events=True))
    (rerun,) = js.load_recording(again)
    assert [d for _t, d in rerun.lm_calls[0].deltas] == [d for _t, d in recorded.lm_calls[0].deltas]
    assert rerun.lm_calls[0].reasoning == "Hmm." == recorded.lm_calls[0].reasoning
    d = js.diff(recorded, rerun)
    assert not d.prompts and not d.outputs and not d.inputs and d.status is None


def test_a_history_run_that_was_not_recorded_cannot_be_replayed(lm, server):
    server.script(ANSWER)
    list(js.stream(js.Predict("question -> answer"), None, {"question": "q"}))
    with pytest.raises(js.UsageError, match=r"kept no events .*js.runs.limit\(events=True\)\): record it, then "):
        js.replay(js.runs[-1])


def test_with_events_kept_any_run_of_the_history_replays(lm, server):
    saved = js.runs.events
    js.runs.limit(events=True)
    try:
        server.script(ANSWER)
        events = list(js.stream(js.ChainOfThought("question -> answer"), None, {"question": "q"}))
    finally:
        js.runs.limit(events=saved)
    run = js.runs[-1]
    assert list(js.replay(run, speed=0)) == events and run.size > 0
    assert [d for _t, d in run.lm_calls[0].deltas] and "".join(d for _t, d in run.lm_calls[0].deltas) == ANSWER


# ------------------------------------------------------------------------------------------- the CLI
def test_cli_replay_prints_the_run_like_run_does(tmp_path, lm, server, capsys):
    path = tmp_path / "run.jsonl"
    _record(path, lm, server, ANSWER)
    assert main(["replay", str(path), "--speed", "0", "--color", "never"]) == 0
    out, err = capsys.readouterr()
    assert "── predict.reasoning ──\nIt is in France.\n\n── predict.answer ──\nParis\n" in out
    assert "── prediction ──\nreasoning: 'It is in France.'\nanswer: 'Paris'" in out
    assert "replay of run.jsonl[0]: ChainOfThought(question -> reasoning, answer) on test-model" in err


def test_cli_replay_of_a_failed_run_shows_the_error_and_exits_1(tmp_path, lm, server, capsys):
    path = tmp_path / "run.jsonl"
    server.script(Reply(content=LONG, fault=Fault("drop", after=12)))
    with js.record(path), pytest.raises(js.LMError):
        list(js.stream(js.Predict("question -> answer"), None, {"question": "q"}))
    assert main(["replay", str(path), "--speed", "0", "--color", "never"]) == 1
    out, _ = capsys.readouterr()
    assert "── answer ──\nw0 w1" in out and "error: LMError: " in out


@pytest.mark.parametrize("args, message", [
    (["--run", "3"], r"replay\(run=3\): '.*run.jsonl' holds 1 run \(run=0 to run=0, or -1 for the last\)"),
    (["--speed", "-1"], r"replay\(speed=...\) takes a number >= 0"),
])
def test_cli_replay_bad_options_exit_2_with_one_line(tmp_path, lm, server, capsys, args, message):
    path = tmp_path / "run.jsonl"
    _record(path, lm, server, ANSWER)
    assert main(["replay", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jupyter-stream: ")
    assert pytest.importorskip("re").search(message, err)


# ----------------------------------------------------------------------------------------- bad input
@pytest.fixture
def recording(tmp_path, lm, server):
    path = tmp_path / "run.jsonl"
    _record(path, lm, server, ANSWER)
    return path


def _rewrite(path, edit):
    lines = path.read_text("utf-8").splitlines(keepends=True)
    path.write_text("".join(edit(lines)), "utf-8")


def _fails(path, pattern):
    with pytest.raises(js.RecordingError, match=pattern) as info:
        js.replay(path)
    assert isinstance(info.value, js.UsageError)
    return str(info.value)


def test_a_missing_file_says_so(tmp_path):
    _fails(tmp_path / "nope.jsonl", r"no recording at '.*nope.jsonl': the file does not exist "
                                     r"\(make one with `with js.record\(")


def test_an_empty_file_says_so(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    _fails(path, r"empty.jsonl' is empty: not a recording")


def test_a_file_that_is_not_a_recording_says_so_on_line_1(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"hello": 1}\n')
    _fails(path, r"other.jsonl', line 1: not a jupyter_stream recording: the first line must be the header")


def test_a_newer_schema_version_says_so(recording):
    _rewrite(recording, lambda lines: [lines[0].replace('"version": 1', '"version": 7'), *lines[1:]])
    _fails(recording, r"line 1: recording schema version 7 is newer than this jupyter_stream reads \(up to 1\): "
                      r"upgrade jupyter_stream")


def test_a_line_that_is_not_json_names_the_line(recording):
    _rewrite(recording, lambda lines: [*lines[:2], "{not json\n", *lines[2:]])
    _fails(recording, r"line 3: not JSON \(.*\); a recording holds one JSON object a line")


def test_a_truncated_last_line_names_the_line(recording):
    lines = recording.read_text("utf-8").splitlines(keepends=True)
    _rewrite(recording, lambda lines: [*lines[:-1], lines[-1][:20]])
    _fails(recording, rf"line {len(lines)}: the line is cut short: the file is truncated")


def test_a_run_without_its_end_says_the_file_is_truncated(recording):
    _rewrite(recording, lambda lines: lines[:-1])
    _fails(recording, r"the file ends inside the run of line 2 \(it has no 'end' line\): the file is truncated")


def test_an_unknown_line_type_names_the_line(recording):
    _rewrite(recording, lambda lines: [*lines[:2], '{"type": "mystery", "run": 0}\n', *lines[2:]])
    _fails(recording, r"line 3: unknown line type 'mystery' \(expected 'run', 'lm_call', 'event' or 'end'\)")


def test_a_field_of_the_wrong_type_names_the_line_and_the_field(recording):
    def edit(lines):
        obj = json.loads(lines[3])
        obj["t"] = "soon"
        return [*lines[:3], json.dumps(obj) + "\n", *lines[4:]]

    _rewrite(recording, edit)
    _fails(recording, r"line 4: 't' of a 'event' line should be int or float, not str")


def test_a_missing_field_names_the_line_and_the_field(recording):
    def edit(lines):
        obj = json.loads(lines[2])
        del obj["messages"]
        return [*lines[:2], json.dumps(obj) + "\n", *lines[3:]]

    _rewrite(recording, edit)
    _fails(recording, r"line 3: a 'lm_call' line without 'messages'")


def test_a_line_outside_a_run_names_the_line(recording):
    _rewrite(recording, lambda lines: [lines[0], *lines[2:]])
    _fails(recording, r"line 2: a 'lm_call' line outside a run \(no 'run' line before it\)")


def test_a_recording_that_cannot_be_written_says_where(tmp_path):
    with pytest.raises(js.RecordingError, match=r"cannot write the recording '.*missing/run.jsonl'"):
        js.record(tmp_path / "missing" / "run.jsonl")


@pytest.mark.parametrize("speed", [-1, "fast", float("nan"), True])
def test_a_bad_speed_is_one_usage_error(recording, speed):
    with pytest.raises(js.UsageError, match=r"replay\(speed=...\) takes a number >= 0"):
        js.replay(recording, speed=speed)


def test_a_replay_stops_when_the_consumer_leaves(recording):
    async def main_():
        replay = js.replay(recording, speed=0.01)  # 100x slower: the consumer leaves long before the end
        agen = replay.__aiter__()
        first = await agen.__anext__()
        await agen.aclose()
        return first

    assert isinstance(asyncio.run(main_()), js.LMRequest)


def test_a_chunk_line_of_the_wrong_type_names_the_line_and_the_field(recording):
    lines = recording.read_text("utf-8").splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if '"kind": "chunk"' in line)

    def edit(lines):
        obj = json.loads(lines[n])
        obj["last"] = "yes"
        return [*lines[:n], json.dumps(obj) + "\n", *lines[n + 1:]]

    _rewrite(recording, edit)
    _fails(recording, rf"line {n + 1}: 'last' of a 'event' line should be bool, not str")


def test_a_file_that_is_not_utf8_names_the_line(recording):
    with recording.open("ab") as f:
        f.write(b'{"type": "run", "title": "\xff"}\n')
    _fails(recording, r"line \d+: not UTF-8 text")
