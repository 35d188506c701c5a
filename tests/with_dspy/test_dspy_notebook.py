"""DSPy programs in the notebook layer: ``%%stream`` (run_cell_magic), the terminal renderer's panes."""

from __future__ import annotations

import io

import dspy

import jupyter_stream as js

def test_magic_streams_a_dspy_program_and_stores_its_own_prediction(ip, dlm, server, capsys):
    ip.user_ns["cot"] = dspy.ChainOfThought("question -> answer")
    server.script("[[ ## reasoning ## ]]\nBlue light scatters.\n\n[[ ## answer ## ]]\nRayleigh\n\n[[ ## completed ## ]]")
    ip.run_cell_magic("stream", "cot --text --out res", "Why is the sky blue?\n")
    out = capsys.readouterr().out
    assert "── predict.reasoning ──\nBlue light scatters.\n" in out
    assert "── predict.answer ──\nRayleigh\n" in out
    assert isinstance(ip.user_ns["res"], dspy.Prediction) and ip.user_ns["_"] is ip.user_ns["res"]
    assert "Why is the sky blue?" in server.requests[-1]["messages"][-1]["content"]


def test_magic_options_apply_to_a_dspy_program(ip, dlm, server, capsys):
    ip.user_ns["qa"] = dspy.Predict("question -> answer")
    ip.run_cell_magic("stream", "qa --text --adapter json --temperature 0.3", "What is 2+2?\n")
    body = server.requests[-1]
    assert body["temperature"] == 0.3
    assert "JSON" in body["messages"][0]["content"] or body.get("response_format")
    assert isinstance(ip.user_ns["_"], dspy.Prediction)


def test_terminal_gives_each_call_of_a_predictor_its_own_section(dlm):
    class Loop(dspy.Module):
        def __init__(self):
            super().__init__()
            self.step = dspy.Predict("question -> answer")

        def forward(self, question):
            for _ in range(2):
                question = self.step(question=question).answer
            return dspy.Prediction(answer=question)

    out = io.StringIO()
    renderer = js.TextRenderer(out, color=False)
    for event in js.stream(Loop(), None, {"question": "q"}):
        renderer.handle(event)
    renderer.finish()
    text = out.getvalue()
    assert "── step.answer ──" in text and "── step[2].answer ──" in text
    assert "── prediction ──" in text
