"""DSPy's streaming tutorial examples, with only ``dspy`` replaced by ``jupyter_stream``.

The code in each test is written as DSPy's docs write it (``dspy.settings.configure``,
``dspy.streaming.StreamListener``, ``dspy.streamify(...)``, ``async_streaming=False``...), against
the loopback server instead of OpenAI.
"""

from __future__ import annotations

import asyncio

import jupyter_stream as dspy


def test_streamify_docstring_example(server):
    server.reset()
    dspy.settings.configure(lm=dspy.LM("openai/gpt-4o-mini", api_base=server.url, api_key="k", cache=False))
    server.script("[[ ## a ## ]]\nTo get to the other side!\n\n[[ ## completed ## ]]")

    # Create the program and wrap it with streaming functionality
    program = dspy.streamify(dspy.Predict("q->a"))

    # Use the program with streaming output
    async def use_streaming():
        output = program(q="Why did a chicken cross the kitchen?")
        return_value = None
        async for value in output:
            if isinstance(value, dspy.Prediction):
                return_value = value
        return return_value

    output = asyncio.run(use_streaming())
    assert output.a == "To get to the other side!"
    assert server.requests[-1]["model"] == "gpt-4o-mini"
    dspy.settings.configure(lm=None)


def test_stream_listeners_tutorial(server):
    server.reset()
    dspy.settings.configure(lm=dspy.LM("openai/gpt-4o-mini", base_url=server.url, api_key="k", cache=False))
    server.script(
        "[[ ## answer ## ]]\nTo get to the other side.\n\n[[ ## reasoning ## ]]\nChickens cross roads.\n\n[[ ## completed ## ]]"
    )

    predict = dspy.Predict("question->answer, reasoning")
    stream_listeners = [
        dspy.streaming.StreamListener(signature_field_name="answer"),
        dspy.streaming.StreamListener(signature_field_name="reasoning"),
    ]
    stream_predict = dspy.streamify(predict, stream_listeners=stream_listeners)

    chunks = {"answer": "", "reasoning": ""}

    async def use_streaming():
        output = stream_predict(question="why did a chicken cross the kitchen?")
        return_value = None
        async for value in output:
            if isinstance(value, dspy.Prediction):
                return_value = value
            elif isinstance(value, dspy.streaming.StreamResponse):
                chunks[value.signature_field_name] += value.chunk
        return return_value

    output = asyncio.run(use_streaming())
    assert chunks == {"answer": output.answer, "reasoning": output.reasoning}
    assert output.answer == "To get to the other side."
    dspy.settings.configure(lm=None)


def test_sync_streaming_and_status_provider_tutorial(server):
    server.reset()
    dspy.configure(lm=dspy.LM("openai/gpt-4o-mini", base_url=server.url, api_key="k", cache=False))
    server.script("[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]")

    class MyStatusMessageProvider(dspy.streaming.StatusMessageProvider):
        def module_start_status_message(self, instance, inputs):
            return "Predicting..."

        def tool_end_status_message(self, outputs):
            return f"Tool calling finished with output: {outputs}!"

    predict = dspy.Predict("question->answer")
    stream_predict = dspy.streamify(
        predict,
        status_message_provider=MyStatusMessageProvider(),
        stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")],
        async_streaming=False,
    )
    output = stream_predict(question="2+2?")
    seen = list(output)
    assert isinstance(seen[0], dspy.streaming.StatusMessage) and seen[0].message == "Predicting..."
    assert "".join(c.chunk for c in seen if isinstance(c, dspy.streaming.StreamResponse)) == "4"
    assert seen[-1].answer == "4"
    dspy.configure(lm=None)


def test_streaming_response_for_a_fastapi_style_endpoint(server):
    server.reset()
    dspy.configure(lm=dspy.LM("openai/gpt-4o-mini", base_url=server.url, api_key="k", cache=False))
    server.script("[[ ## answer ## ]]\nHi\n\n[[ ## completed ## ]]")
    streaming_program = dspy.streamify(dspy.Predict("question->answer"))

    async def endpoint():
        stream = streaming_program(question="hello")
        return [line async for line in dspy.streaming.streaming_response(stream)]

    lines = asyncio.run(endpoint())
    assert lines[-1] == "data: [DONE]\n\n"
    assert lines[-2] == 'data: {"prediction": {"answer": "Hi"}}\n\n'
    assert all(line.startswith("data: ") for line in lines)
    dspy.configure(lm=None)
