"""Prompt pieces shared by the three adapters (private).

Every system message starts with the same field description block::

    Your input fields are:
    1. `question` (str): what the user asks
    2. `context` (str)
    Your output fields are:
    1. `reasoning` (str)
    2. `answer` (int)

and ends with the task description (DSPy's wording). Inputs are written as ``[[ ## name ## ]]`` blocks
by all three adapters; non-``str`` values are rendered as JSON.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import pydantic
from pydantic_core import to_jsonable_python

from .._signatures import Field, Signature

from .base import Adapter

if typing.TYPE_CHECKING:
    from .base import Message, Turn

STRUCTURE_INTRO = "All interactions will be structured in the following way, with the appropriate values filled in."


def field_description_block(signature: type[Signature]) -> str:
    """The ``Your input fields are: ... Your output fields are: ...`` block that opens every system message."""

    def listing(fields: Mapping[str, Field]) -> str:
        lines = []
        for idx, (name, f) in enumerate(fields.items(), 1):
            line = f"{idx}. `{name}` ({f.type_name()})"
            if f.desc:
                line += f": {f.desc}"
            lines.append(line)
        return "\n".join(lines)

    ins = signature.input_fields
    head = f"Your input fields are:\n{listing(ins)}" if ins else "Your input fields are: none"
    return f"{head}\nYour output fields are:\n{listing(signature.output_fields)}"


def task_description(signature: type[Signature]) -> str:
    """``In adhering to this structure, your objective is: `` followed by the instructions, each line indented."""
    objective = ("\n" + " " * 8).join([""] + signature.instructions.splitlines())
    return f"In adhering to this structure, your objective is: {objective}"


def render_value(value: Any) -> str:
    """A value as it appears in a prompt or reply: ``str`` as is, anything else as JSON text."""
    if isinstance(value, str):
        return value
    if isinstance(value, pydantic.BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, ensure_ascii=False, default=to_jsonable_python)


def jsonable(value: Any) -> Any:
    """A value ready for ``json.dumps`` (pydantic models dumped in JSON mode)."""
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    return to_jsonable_python(value)


def header(name: str) -> str:
    return f"[[ ## {name} ## ]]"


def input_blocks(signature: type[Signature], inputs: Mapping[str, Any]) -> str:
    """The inputs as ``[[ ## name ## ]]\\n<value>`` blocks separated by blank lines (signature order)."""
    return "\n\n".join(
        f"{header(name)}\n{render_value(inputs[name])}" for name in signature.input_fields if name in inputs
    )


def type_note(f: Field) -> str:
    """What a non-``str`` output value must look like, for the structure part of the system message."""
    ann = f.annotation
    if ann is str:
        return ""
    if ann is bool:
        return "must be True or False"
    if ann is int:
        return "must be an integer value"
    if ann is float:
        return "must be a number"
    if typing.get_origin(ann) is Literal:
        return "must exactly match (no extra characters) one of: " + "; ".join(str(a) for a in typing.get_args(ann))
    try:
        schema = json.dumps(pydantic.TypeAdapter(ann).json_schema(), ensure_ascii=False)
    except Exception:  # noqa: BLE001 - a type pydantic cannot describe: the type name is enough
        return f"must be a valid {f.type_name()}"
    return f"must adhere to the schema: {schema}"


def placeholder(f: Field) -> str:
    """``{answer}`` plus its type note, as in DSPy's structure section."""
    note = type_note(f)
    return f"{{{f.name}}}" + (" " * 8 + f"# note: {note}" if note else "")


def type_info(f: Field) -> str:
    """`` (must be formatted as a valid Python int)`` for non-``str`` fields, else empty."""
    return "" if f.annotation is str else f" (must be formatted as a valid Python {f.type_name()})"


def build_messages(
    signature: type[Signature],
    inputs: Mapping[str, Any],
    *,
    system: str,
    requirements: str,
    format_reply: Callable[[type[Signature], Mapping[str, Any]], str],
    demos: Sequence[Turn],
    history: Sequence[Turn],
) -> list[Message]:
    """System message, then demo and history turns as user/assistant pairs, then the final user message."""
    messages: list[Message] = [{"role": "system", "content": system}]
    for turn_inputs, turn_outputs in (*demos, *history):
        messages.append({"role": "user", "content": input_blocks(signature, turn_inputs)})
        messages.append({"role": "assistant", "content": format_reply(signature, turn_outputs)})
    blocks = input_blocks(signature, inputs)
    messages.append({"role": "user", "content": f"{blocks}\n\n{requirements}" if blocks else requirements})
    return messages


def reply_start(completion: str, limit: int = 200) -> str:
    """The start of a reply, for error messages."""
    return completion if len(completion) <= limit else completion[:limit] + "..."


def system_message_with_outputs(signature: type[Signature], outputs_intro: str, outputs_shape: str) -> str:
    """A system message for a non-chat format: fields, input blocks, the output shape, the instructions."""
    parts = [STRUCTURE_INTRO]
    if signature.input_fields:
        parts.append("Inputs will have the following structure:")
        parts.append("\n\n".join(f"{header(n)}\n{{{n}}}" for n in signature.input_fields))
    parts += [outputs_intro, outputs_shape]
    structure = "\n\n".join(parts)
    return f"{field_description_block(signature)}\n{structure}\n{task_description(signature)}"


class PromptAdapter(Adapter):
    """An adapter whose messages are built from three pieces: a system message, the output
    requirements sentence, and the reply format (used for demos and history turns)."""

    def format(
        self,
        signature: type[Signature],
        inputs: Mapping[str, Any],
        *,
        demos: Sequence[Turn] = (),
        history: Sequence[Turn] = (),
    ) -> list[Message]:
        return build_messages(
            signature,
            inputs,
            system=self.system_message(signature),
            requirements=self.output_requirements(signature),
            format_reply=self.format_reply,
            demos=demos,
            history=history,
        )

    def system_message(self, signature: type[Signature]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def output_requirements(self, signature: type[Signature]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def format_reply(self, signature: type[Signature], outputs: Mapping[str, Any]) -> str:  # pragma: no cover
        raise NotImplementedError
