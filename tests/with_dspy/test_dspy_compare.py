"""compare() of a DSPy program: variants in DSPy's own settings, on the configured dspy.LM's server."""

from __future__ import annotations

import asyncio

import dspy
import pytest

import jupyter_stream as js


def chat(answer: str) -> str:
    return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def test_models_keep_the_configured_dspy_server_and_key(dlm, server):
    server.script(chat("from small"), model="small")
    server.script(chat("from large"), model="large")
    comparison = js.Comparison(dspy.Predict("question -> answer"), {"question": "q"}, variants="model=small,large")
    assert comparison.models == {"model=small": "openai/small", "model=large": "openai/large"}
    result = asyncio.run(comparison.run())
    assert {k: p.answer for k, p in result.items()} == {"model=small": "from small", "model=large": "from large"}
    assert sorted(r["model"] for r in server.requests) == ["large", "small"]


def test_adapters_and_temperatures(dlm, server):
    result = js.compare(dspy.Predict("question -> answer"), variants="adapter=chat,json", question="Why?")
    assert all("Why?" in p.answer for p in result.values())
    assert sum("JSON" in r["messages"][0]["content"] for r in server.requests) == 1
    server.reset()
    js.compare(dspy.Predict("question -> answer"), variants="temperature=0,0.7", question="q")
    assert sorted(r.get("temperature") for r in server.requests) == [0.0, 0.7]


def test_instructions_copy_the_predictor(dlm, server):
    program = dspy.ChainOfThought("question -> answer")
    before = program.predict.signature.instructions
    js.compare(program, variants=[{"instructions": "Say yes."}, {"instructions": "Say no."}], question="q")
    systems = " ".join(r["messages"][0]["content"] for r in server.requests)
    assert "Say yes." in systems and "Say no." in systems
    assert program.predict.signature.instructions == before


def test_a_dspy_variant_refuses_our_lm_in_one_line(dlm, server):
    with pytest.raises(js.ConfigurationError, match="a DSPy program compares by model=, adapter= .by name., temperature="):
        js.Comparison(dspy.Predict("question -> answer"), {"question": "q"},
                      variants=[{"lm": js.LM("a", base_url=server.url)}, {}])
    assert server.requests == []
