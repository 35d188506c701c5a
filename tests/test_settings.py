"""Settings scoped with contextvars; callbacks; the demo LM used when nothing is configured."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import jupyter_stream as js


async def test_context_is_private_to_each_task(lm):
    seen = {}

    async def worker(name, adapter):
        with js.context(adapter=adapter):
            await asyncio.sleep(0.01)  # let the other task enter its own context
            seen[name] = js.settings.current().adapter.name

    await asyncio.gather(worker("a", "json"), worker("b", "xml"), worker("c", "chat"))
    assert seen == {"a": "json", "b": "xml", "c": "chat"}
    assert js.settings.current().adapter is None


def test_context_is_private_to_each_thread(lm):
    barrier = threading.Barrier(2)
    seen = {}

    def worker(name, adapter):
        with js.context(adapter=adapter):
            barrier.wait()
            seen[name] = js.settings.current().adapter.name
            barrier.wait()

    threads = [threading.Thread(target=worker, args=(n, a)) for n, a in (("t1", "json"), ("t2", "xml"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"t1": "json", "t2": "xml"}


def test_tool_and_module_callbacks_fire(lm, server):
    events = []

    class Recorder(js.BaseCallback):
        def on_module_start(self, call_id, instance, inputs):
            events.append(("module_start", type(instance).__name__))

        def on_lm_start(self, call_id, instance, inputs):
            events.append(("lm_start", instance.model))

        def on_lm_end(self, call_id, outputs, exception=None):
            events.append(("lm_end", outputs))

        def on_tool_end(self, call_id, outputs, exception=None):
            events.append(("tool_end", outputs))

    server.script("[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]")
    tool = js.Tool(lambda x: x * 2, name="double")
    with js.context(callbacks=[Recorder()]):
        assert tool(x=21) == 42
        js.Predict("question -> answer")(question="q")
    assert events == [
        ("tool_end", 42),
        ("module_start", "Predict"),
        ("lm_start", "test-model"),
        ("lm_end", "[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]"),
    ]


def _run(code: str, **env_changes: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(env_changes)
    env["JUPYTER_STREAM_DEMO_RATE"] = "0"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_demo_lm_answers_when_nothing_is_configured():
    proc = _run("import jupyter_stream as js\nprint(js.Predict('question -> answer')(question='Why?').answer)")
    assert proc.returncode == 0, proc.stderr
    assert "Why?" in proc.stdout
    assert "built-in demo LM" in proc.stderr and "configure(lm=" in proc.stderr
    assert proc.stderr.count("demo LM is answering") == 1


def test_a_key_without_an_lm_is_a_configuration_error():
    proc = _run(
        "import jupyter_stream as js\n"
        "try:\n    js.Predict('question -> answer')(question='Why?')\n"
        "except js.ConfigurationError as e:\n    print('CONFIG:', e)\n",
        OPENAI_API_KEY="sk-should-not-be-used",
    )
    assert proc.returncode == 0, proc.stderr
    assert "CONFIG: no LM configured" in proc.stdout
    assert "sk-should-not-be-used" not in proc.stdout + proc.stderr
