"""compare(): variants of one program at once on the real loopback demo LM, their tagged events, stats,
errors, one stop for all, the word diff, the spec's bad input, and ``jupyter-stream run --compare``."""

from __future__ import annotations

import asyncio
import difflib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jupyter_stream as js
from jupyter_stream.demo import DemoServer, Fault, Reply
from jupyter_stream._compare import VariantStats
from jupyter_stream._variants import parse_spec
from jupyter_stream import _worddiff
from jupyter_stream._worddiff import _TOKENS, PredictionDiff, matching_blocks, word_ops

QA = "question -> answer"


def chat(answer: str) -> str:
    return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def texts(items) -> dict[str, str]:
    """Each variant's streamed answer text, joined from its tagged events."""
    out: dict[str, str] = {}
    for item in items:
        if isinstance(item, js.VariantEvent) and isinstance(item.event, js.StreamResponse):
            out[item.variant] = out.get(item.variant, "") + item.event.chunk
    return out


# ------------------------------------------------------------------------------------ running variants


def test_two_models_each_get_their_own_reply(lm, server):
    server.script(chat("Paris is the capital."), model="small")
    server.script(chat("Paris is a big city."), model="large")
    result = js.compare(js.Predict(QA), variants="model=small,large", question="Capital of France?")
    assert isinstance(result, js.CompareResult)
    assert list(result) == ["model=small", "model=large"]
    assert {k: p.answer for k, p in result.items()} == {"model=small": "Paris is the capital.",
                                                         "model=large": "Paris is a big city."}
    assert sorted(r["model"] for r in server.requests) == ["large", "small"]
    assert result.errors == {}
    for stats in result.stats.values():
        assert stats.tokens > 0 and stats.ttft is not None and stats.seconds >= stats.ttft


def test_the_lms_made_for_variants_are_closed_after(lm, server):
    js.compare(js.Predict(QA), variants="model=a,b", question="q")
    assert server.wait_idle(5.0)
    deadline = time.monotonic() + 5.0
    while server.connections_closed < server.connections_opened and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.connections_closed == server.connections_opened == 2


def test_three_variants_stream_tagged_events_then_the_result(lm, server):
    for model, answer in [("a", "one"), ("b", "two two"), ("c", "three three three")]:
        server.script(chat(answer), model=model)
    comparison = js.Comparison(js.Predict(QA), {"question": "Count?"}, variants="model=a,b,c")
    assert comparison.labels == ["model=a", "model=b", "model=c"]
    assert comparison.models == {"model=a": "a", "model=b": "b", "model=c": "c"}
    items = list(comparison)
    assert isinstance(items[-1], js.CompareResult) and items[-1] is comparison.result
    body = items[:-1]
    assert all(isinstance(i, (js.VariantEvent, js.VariantDone)) for i in body)
    assert texts(body) == {"model=a": "one", "model=b": "two two", "model=c": "three three three"}
    done = [i for i in body if isinstance(i, js.VariantDone)]
    assert sorted(d.variant for d in done) == comparison.labels
    for d in done:  # each variant's done comes after all of its events
        last = max(n for n, i in enumerate(body) if isinstance(i, js.VariantEvent) and i.variant == d.variant)
        assert body.index(d) > last
        assert d.error is None and d.prediction.answer == texts(body)[d.variant]
    kinds = {type(i.event).__name__ for i in body if isinstance(i, js.VariantEvent)}
    assert {"StreamResponse", "LMRequest", "LMResponse", "Prediction"} <= kinds


async def test_adapters_each_ask_in_their_own_format(lm, server):
    result = await js.acompare(js.Predict(QA), variants="adapter=chat,json,xml", question="Why is the sky blue?")
    assert list(result) == ["adapter=chat", "adapter=json", "adapter=xml"]
    assert all("Why is the sky blue?" in p.answer for p in result.values())
    systems = [r["messages"][0]["content"] for r in server.requests]
    assert len(set(systems)) == 3
    assert sum("JSON" in s for s in systems) == 1 and sum("<answer>" in s for s in systems) == 1


def test_temperatures_keep_the_configured_server_and_model(lm, server):
    js.compare(js.Predict(QA), variants="temperature=0,0.7", question="q")
    assert sorted((r["model"], r.get("temperature")) for r in server.requests) == [("test-model", 0.0),
                                                                                   ("test-model", 0.7)]


def test_instructions_from_a_namespace_and_the_program_unchanged(lm, server):
    program = js.ChainOfThought(QA)
    before = program.predict.signature.instructions
    ns = {"terse": "Answer in three words.", "kind": "Answer kindly and at length."}
    result = js.compare(program, variants="instructions={terse},{kind}", namespace=ns, question="q")
    assert list(result) == ["instructions={terse}", "instructions={kind}"]
    systems = [r["messages"][0]["content"] for r in server.requests]
    assert sorted(text for text in ns.values() for system in systems if text in system) == sorted(ns.values())
    assert program.predict.signature.instructions == before


def test_lms_on_different_servers(lm, server):
    with DemoServer() as other:
        other.script(chat("from the other server"))
        server.script(chat("from the first server"))
        elsewhere = js.LM("far", base_url=other.url, api_key="k2", cache=False)
        here = lm.copy(model="near")
        result = js.compare(js.Predict(QA), variants=[{"lm": here}, {"lm": elsewhere, "label": "far away"}], question="q")
        elsewhere.close()
        here.close()
        assert {k: p.answer for k, p in result.items()} == {"lm=near": "from the first server",
                                                             "far away": "from the other server"}
        assert [r["model"] for r in other.requests] == ["far"]
        assert [r["model"] for r in server.requests] == ["near"]


def test_programs_compared_the_given_one_first(lm, server):
    prog_b = js.ChainOfThought(QA)
    result = js.compare(js.Predict(QA), variants="program={prog_b}", namespace={"prog_b": prog_b}, question="q")
    assert list(result) == ["program", "program={prog_b}"]
    assert "reasoning" not in result["program"] and result["program={prog_b}"].reasoning


def test_a_failing_variant_shows_its_error_and_the_others_finish(lm, server):
    server.script(Fault("status", status=500, times=3), model="broken")
    server.script(chat("fine"), model="ok")
    comparison = js.Comparison(js.Predict(QA), {"question": "q"}, variants="model=ok,broken")
    items = list(comparison)
    result = items[-1]
    assert result["model=ok"].answer == "fine"
    assert isinstance(result["model=broken"], js.LMError) and "HTTP 500" in str(result["model=broken"])
    assert list(result.errors) == ["model=broken"]
    done = {i.variant: i for i in items if isinstance(i, js.VariantDone)}
    assert done["model=broken"].error is result["model=broken"] and done["model=broken"].prediction is None
    assert "model=broken failed: LMError" in str(result.diff)


def test_a_variant_whose_model_the_server_does_not_know(lm, server):
    server.script(Fault("status", status=404, body={"error": {"message": "The model `nope` does not exist"}}),
                  model="nope")
    result = js.compare(js.Predict(QA), variants="model=test-model,nope", question="q")
    assert "does not exist" in str(result["model=nope"]) and result["model=test-model"].answer


def stalled(server: DemoServer, *models: str) -> None:
    """Each model's reply streams some answer text, then stalls with the connection open."""
    for model in models:
        server.script(Reply(content=chat("word " * 50), fault=Fault("stall", after=12)), model=model)


def all_streaming(comparison_items, labels, stop) -> list:
    """Consume until every variant has streamed answer text, then call ``stop()``; what was consumed."""
    seen: set[str] = set()
    got = []
    for item in comparison_items:
        got.append(item)
        if isinstance(item, js.VariantEvent) and isinstance(item.event, js.StreamResponse) and item.event.chunk:
            seen.add(item.variant)
            if seen == set(labels):
                stop()
    return got


def assert_all_closed(server: DemoServer, n: int) -> None:
    assert server.wait_idle(5.0)
    assert server.stream_closed_early == n
    assert server.connections_closed == server.connections_opened == n


async def test_stop_stops_every_variant_and_closes_every_request(lm, server):
    stalled(server, "a", "b", "c")
    comparison = js.Comparison(js.Predict(QA), {"question": "q"}, variants="model=a,b,c")
    seen: set[str] = set()
    got = []
    async for item in comparison:
        got.append(item)
        if isinstance(item, js.VariantEvent) and isinstance(item.event, js.StreamResponse) and item.event.chunk:
            seen.add(item.variant)
            if len(seen) == 3:
                comparison.stop()  # the loop ends once every variant is closed
    assert seen == set(comparison.labels)
    assert comparison.stopped and comparison.result is None
    assert not any(isinstance(i, (js.VariantDone, js.CompareResult)) for i in got)
    assert_all_closed(server, 3)


async def test_cancelling_the_task_that_runs_it_stops_every_variant(lm, server):
    stalled(server, "a", "b", "c")
    lms = {name: lm.copy(model=name) for name in ("a", "b", "c")}  # the caller's LMs: compare leaves them open
    comparison = js.Comparison(js.Predict(QA), {"question": "q"}, variants="lm={a},{b},{c}", namespace=lms,
                               stream_timeout=None)  # nothing but the cancellation ends the stalled replies
    task = asyncio.create_task(comparison.run())
    deadline = time.monotonic() + 10.0
    while not (len(comparison.stats) == 3 and all(s.chunks for s in comparison.stats.values())):
        assert time.monotonic() < deadline, "the variants did not all stream"
        await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=30)  # a guard against a hang, not a speed limit
    assert done and task.cancelled(), "cancelling did not stop the variants"
    assert comparison.result is None
    assert_all_closed(server, 3)
    for each in lms.values():
        await each.aclose()


async def test_leaving_the_async_loop_stops_every_variant(lm, server):
    stalled(server, "a", "b")
    comparison = js.Comparison(js.Predict(QA), {"question": "q"}, variants="model=a,b")
    seen: set[str] = set()
    async for item in comparison:
        if isinstance(item, js.VariantEvent) and isinstance(item.event, js.StreamResponse) and item.event.chunk:
            seen.add(item.variant)
            if len(seen) == 2:
                break
    assert len(seen) == 2
    await comparison.aclose()
    assert await asyncio.to_thread(server.wait_idle, 5.0)  # the loop runs the generator's closing meanwhile
    assert_all_closed(server, 2)


def test_sync_close_stops_every_variant(lm, server):
    stalled(server, "a", "b")
    comparison = js.Comparison(js.Predict(QA), {"question": "q"}, variants="model=a,b")
    seen: set[str] = set()
    for item in comparison:
        assert not isinstance(item, js.VariantDone)
        if isinstance(item, js.VariantEvent) and isinstance(item.event, js.StreamResponse) and item.event.chunk:
            seen.add(item.variant)
            if len(seen) == 2:
                comparison.close()
                break
    assert len(seen) == 2
    assert_all_closed(server, 2)


def test_stop_from_another_thread(lm, server):
    stalled(server, "a", "b")
    comparison = js.Comparison(js.Predict(QA), {"question": "q"}, variants="model=a,b")
    got = all_streaming(comparison, comparison.labels,
                        lambda: threading.Thread(target=comparison.stop).start())
    assert comparison.stopped and comparison.result is None
    assert not any(isinstance(i, js.VariantDone) for i in got)
    assert_all_closed(server, 2)


def test_a_comparison_runs_once(lm, server):
    comparison = js.Comparison(js.Predict(QA), {"question": "q"}, variants="model=a,b")
    list(comparison)
    with pytest.raises(js.UsageError, match="runs once"):
        list(comparison)


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("variants", "message"), [
    ("model=a", "compare needs 2 to 8 variants, got 1"),
    ("model=" + ",".join("abcdefghi"), "compare needs 2 to 8 variants, got 9"),
    ("colour=red,blue", "unknown key 'colour'; compare by model, adapter, temperature, instructions, lm, program"),
    ("instructions={terse},{nope}", "compare instructions={nope}: no such variable; define nope first"),
    ("adapter=chat,yaml", "compare adapter=yaml: unknown adapter; use chat, json, xml"),
    ("temperature=0,hot", "compare temperature=hot: not a number"),
    ("temperature=0,7", "compare temperature=7: out of range"),
    ("model", "compare 'model': write KEY=VALUE,VALUE"),
    ("model=a,,b", "an empty value"),
    ("lm=gpt,gpt2", "compare lm=gpt: lm takes variables"),
    ("program={terse}", "compare program={terse}: not a program (got str)"),
    ("lm={terse},{terse}", "compare lm={terse}: not an LM (got str)"),
    ([{"model": "a"}, {"colour": "b"}], "unknown key 'colour'"),
    ([{"model": "a"}, {"model": "b", "lm": js.LM("c", base_url="http://127.0.0.1:9/v1")}], "sets both lm and model"),
    (42, "variants must be a spec such as 'model=a,b' or a list of dicts"),
])
def test_bad_variants_raise_one_line_before_any_request(lm, server, variants, message):
    with pytest.raises(js.ConfigurationError) as info:
        js.Comparison(js.Predict(QA), {"question": "q"}, variants=variants, namespace={"terse": "Be brief."})
    assert message in str(info.value) and "\n" not in str(info.value)
    assert server.requests == []


def test_a_name_without_a_namespace_says_so(lm, server):
    with pytest.raises(js.ConfigurationError, match=r"instructions=\{a\}: no namespace to look it up in"):
        js.compare(js.Predict(QA), variants="instructions={a},{b}", question="q")


def test_instructions_of_a_many_predictor_program_are_refused(lm, server):
    class Two(js.Module):
        def __init__(self):
            self.first = js.Predict(QA)
            self.second = js.Predict("answer -> summary")

        def forward(self, question):
            return self.second(answer=self.first(question=question).answer)

    with pytest.raises(js.ConfigurationError, match=r"Two has 2 predictors \(first, second\).*program=\{\.\.\.\}"):
        js.compare(Two(), variants=[{"instructions": "a"}, {"instructions": "b"}], question="q")


def test_a_variant_that_could_not_authenticate_is_refused_before_any_request(server, monkeypatch):
    """No LM configured and no key: a real model name needs a key; said once, naming the variant, and no request
    leaves (the demo LM answers only when no model is named)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    js.configure(lm=None)
    keyless = js.LM("gpt-4o-mini", base_url=server.url, api_key="k")
    with pytest.raises(js.ConfigurationError, match=r"^variant model=gpt-4o-mini: no API key for model 'gpt-4o-mini'"):
        js.compare(js.Predict(QA), variants="model=gpt-4o-mini,gpt-4.1-mini", question="q")
    with pytest.raises(js.ConfigurationError, match=r"^variant lm=.*: no API key for model 'other'"):
        js.compare(js.Predict(QA), variants=[{"lm": keyless}, {"lm": js.LM("other")}], question="q")
    assert server.requests == []


def test_missing_input_raises_before_any_request(lm, server):
    with pytest.raises(js.InputError, match="missing input"):
        js.compare(js.Predict(QA), variants="model=a,b", topic="q")
    assert server.requests == []


def test_identical_variants_get_unique_labels(lm, server):
    result = js.compare(js.Predict(QA), variants=[{"temperature": 0.7}, {"temperature": 0.7}], question="q")
    assert list(result) == ["temperature=0.7", "temperature=0.7 #2"]


def test_parse_spec_labels_and_values():
    assert parse_spec("temperature=0, 0.7") == [{"temperature": 0.0, "label": "temperature=0"},
                                                 {"temperature": 0.7, "label": "temperature=0.7"}]
    assert [v["label"] for v in parse_spec("program={b}", namespace={"b": js.Predict(QA)}, base="a")] == [
        "program={a}", "program={b}"]


# ----------------------------------------------------------------------------------------- stats, diff


def test_stats_line_counts_server_tokens_first():
    stats = VariantStats(started=0.0)
    assert stats.line() == "0 tokens in 0.00 s"
    stats.observe(js.StreamResponse("self", "answer", "Hi"))
    stats.observe(js.LMResponse("self", "m", "Hi", usage={"completion_tokens": 7}))
    assert stats.tokens == 7 and stats.chunks == 1 and stats.ttft is not None


def test_the_word_diff_names_the_changed_word():
    diff = PredictionDiff({"a": js.Prediction(answer="The sky is blue.", note="same"),
                           "b": js.Prediction(answer="The sky is grey.", note="same"),
                           "c": js.Prediction(answer="The sea is blue.", note="same")})
    answer_b, answer_c, note_b, _ = diff.fields
    assert (answer_b.field, answer_b.a, answer_b.b) == ("answer", "a", "b")
    assert answer_b.removed == ["blue"] and answer_b.added == ["grey"]
    assert answer_c.removed == ["sky"] and answer_c.added == ["sea"]
    assert not note_b.changed and diff.changed
    text = str(diff)
    assert "The sky is [-blue-]{+grey+}." in text and "(the same)" in text


def test_the_diff_is_inert_text_in_a_terminal_and_escaped_html():
    diff = PredictionDiff({"a": js.Prediction(answer="plain"), "b": js.Prediction(answer="<script>x</script>\x1b[31m")})
    assert "<script>" not in diff._repr_html_() and "&lt;script&gt;" in diff._repr_html_()
    assert "<ins>" in diff._repr_html_()
    assert "\x1b" not in str(diff) and "␛" in str(diff)


def test_word_ops_keep_whitespace_as_written():
    ops = word_ops("line one\nline two", "line one\nline 2")
    assert "".join(t for op, t in ops if op != "+") == "line one\nline two"
    assert "".join(t for op, t in ops if op != "-") == "line one\nline 2"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("ab cd ef gh . , \n".split(" ") + [" ", "\n"]), max_size=120),
       st.lists(st.sampled_from("ab cd ef gh . , \n".split(" ") + [" ", "\n"]), max_size=120))
def test_matching_blocks_are_true_runs_in_order_and_rebuild_both_texts(a, b):
    for small in (_worddiff._SMALL, 0):  # 0: every region cut at its anchors (the path of long texts)
        with mock.patch.object(_worddiff, "_SMALL", small):
            blocks = matching_blocks(a, b)
        end_a = end_b = 0
        for i, j, n in blocks:
            assert n > 0 and i >= end_a and j >= end_b and a[i:i + n] == b[j:j + n]
            end_a, end_b = i + n, j + n
    ops = word_ops("".join(a), "".join(b))
    assert "".join(t for op, t in ops if op != "+") == "".join(a)
    assert "".join(t for op, t in ops if op != "-") == "".join(b)


def test_a_long_edited_text_keeps_what_difflib_keeps():
    """Beyond the small regions given to difflib, anchors (words each text holds once) cut the text first: on
    2,000 words with one in ten replaced, the diff keeps as many words as difflib's own (whose time grows with
    the square of the text: about 2 s here; the benchmark's section 6 times ours)."""
    rng = random.Random(3)
    words = [rng.choice(["the", "a", "of", "sky"]) if rng.random() < 0.3 else f"w{rng.randrange(5000)}" for _ in range(2000)]
    edited = [w if rng.random() > 0.1 else "changed" for w in words]
    a, b = " ".join(words), " ".join(edited)
    ta, tb = _TOKENS.findall(a), _TOKENS.findall(b)
    ours = sum(n for _, _, n in matching_blocks(ta, tb))
    theirs = sum(n for _, _, n in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_matching_blocks())
    assert ours >= theirs * 0.99, (ours, theirs)
    changed = {w for op, t in word_ops(a, b) if op == "+" for w in t.split()}
    assert changed == {"changed"}


# ------------------------------------------------------------------------------------------------- CLI


def _cli(server: DemoServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["DEMO_KEY"] = "sk-compare-SECRET-77"
    return subprocess.run(
        [sys.executable, "-m", "jupyter_stream", "run", QA, "-i", "question=Capital of France?", "--base-url",
         server.url, "--model", "small", "--api-key-env", "DEMO_KEY", "--no-cache", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )


def test_cli_compare_prints_the_variants_one_after_the_other_then_the_diff(server):
    server.reset()
    server.script(chat("Paris is the capital."), model="small")
    server.script(chat("Paris is a big city."), model="large")
    proc = _cli(server, "--compare", "model=small,large", "--temperature", "0.3", "--listen", "answer")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    first, second, diff = out.index("═══ model=small ═══"), out.index("═══ model=large ═══"), out.index("═══ diff ═══")
    assert first < second < diff
    assert "Paris is the capital." in out[first:second] and "Paris is a big city." in out[second:diff]
    assert out[first:second].count(" tokens in ") == 1 and out[second:diff].count(" tokens in ") == 1
    assert "Paris is [-the capital-]{+a big city+}." in out[diff:]
    assert sorted((r["model"], r["temperature"]) for r in server.requests) == [("large", 0.3), ("small", 0.3)]
    assert "SECRET" not in out + proc.stderr and "Traceback" not in proc.stderr


def test_cli_compare_with_a_failing_variant_exits_1_after_the_others(server):
    server.reset()
    server.script(Fault("status", status=500, times=5), model="large")
    server.script(chat("fine"), model="small")
    proc = _cli(server, "--compare", "model=small,large")
    assert proc.returncode == 1, proc.stderr
    large = proc.stdout[proc.stdout.index("═══ model=large ═══"):]
    assert "error: LMError" in large and "HTTP 500" in large
    assert "fine" in proc.stdout[:proc.stdout.index("═══ model=large ═══")]


@pytest.mark.parametrize(("spec", "message"), [
    ("adapter=chat,yaml", "compare adapter=yaml: unknown adapter; use chat, json, xml"),
    ("lm={a},{b}", "--compare lm={a},{b}: a terminal has no variables for {name}; write the values out"),
])
def test_cli_compare_bad_spec_is_one_line(server, spec, message):
    server.reset()
    proc = _cli(server, "--compare", spec)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"jupyter-stream: {message}")
    assert server.requests == []


def test_cli_compare_keeps_cot_and_timeout(server):
    server.reset()
    proc = _cli(server, "--cot", "--timeout", "60", "--compare", "adapter=chat,json")
    assert proc.returncode == 0, proc.stderr
    chat_part, json_part = proc.stdout.split("═══ adapter=json ═══")
    assert chat_part.count("── predict.reasoning ──") == 1 and json_part.count("── predict.reasoning ──") == 1
    assert "── reasoning: adapter=chat → adapter=json ──" in json_part
    assert sum("JSON" in r["messages"][0]["content"] for r in server.requests) == 1


def test_cli_compare_ctrl_c_stops_every_variant_and_closes_every_request(server):
    server.reset()
    for model in ("small", "large"):
        server.script(Reply(content=chat("word " * 50), fault=Fault("stall", after=12)), model=model)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(DEMO_KEY="k", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_stream", "run", QA, "-i", "question=q", "--base-url", server.url, "--model",
         "small", "--api-key-env", "DEMO_KEY", "--no-cache", "--stream-timeout", "600", "--compare", "model=small,large"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 60  # a guard against a hang, not a speed limit
        while server.pending:  # until both requests have taken their stalling replies
            assert proc.poll() is None and time.monotonic() < deadline, "both variants never asked"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "═══ model=small ═══" in out and "stopped" in out and "═══ diff ═══" not in out
    assert server.wait_idle(10.0)
    assert server.stream_closed_early == 2
