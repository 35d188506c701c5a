"""A third-party adapter streams by implementing the three duties - it is not one of three class names."""

from __future__ import annotations

import asyncio

from conftest import collect_fields, last_flags

import jupyter_stream as js
from jupyter_stream.adapters import Adapter, FieldDelta, FieldParser


class LineParser(FieldParser):
    """Fields as ``name:: value`` lines; a line starting with another ``name::`` closes the field."""

    def __init__(self, outputs):
        self.outputs, self.field, self.buf, self.seen = set(outputs), None, "", set()

    def feed(self, text):
        out = []
        self.buf += text  # (kept simple on purpose: this adapter is not ours)
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            out += self._line(line + "\n")
        return out

    def _line(self, line):
        name, sep, rest = line.partition(":: ")
        if sep and name in self.outputs and name not in self.seen:
            out = [FieldDelta(self.field, "", True)] if self.field else []
            self.field = name
            self.seen.add(name)
            return [*out, FieldDelta(name, rest.rstrip("\n"), False)]
        if self.field:
            return [FieldDelta(self.field, "\n" + line.rstrip("\n"), False)]
        return []

    def finish(self):
        out = self._line(self.buf) if self.buf else []
        self.buf = ""
        if self.field:
            out.append(FieldDelta(self.field, "", True))
            self.field = None
        return [d for d in out if d.text or d.last]


class LineAdapter(Adapter):
    name = "lines"

    def format(self, signature, inputs, *, demos=(), history=()):
        asked = ", ".join(signature.output_fields)
        body = "\n".join(f"{k}:: {v}" for k, v in inputs.items())
        return [{"role": "system", "content": f"Reply with lines `name:: value` for {asked}."},
                {"role": "user", "content": body}]

    def parse(self, signature, completion):
        parser = self.field_parser(signature)
        values: dict[str, str] = {}
        for d in [*parser.feed(completion), *parser.finish()]:
            values[d.field] = values.get(d.field, "") + d.text
        return {k: values.get(k, "") for k in signature.output_fields}

    def field_parser(self, signature):
        return LineParser(signature.output_fields)


def test_a_custom_adapter_streams_through_listeners(lm, server):
    js.configure(adapter=LineAdapter())
    server.script("reasoning:: It is\nin France.\nanswer:: Paris\n")
    program = js.streamify(
        js.Predict("question -> reasoning, answer"),
        stream_listeners=[js.StreamListener("reasoning"), js.StreamListener("answer")],
    )

    async def run():
        return [x async for x in program(question="Capital?")]

    out = asyncio.run(run())
    assert out[-1].to_dict() == {"reasoning": "It is\nin France.", "answer": "Paris"}
    assert collect_fields(out) == {"self.reasoning": "It is\nin France.", "self.answer": "Paris"}
    assert last_flags(out) == {"self.reasoning": 1, "self.answer": 1}
    assert server.requests[-1]["messages"][0]["content"] == "Reply with lines `name:: value` for reasoning, answer."
