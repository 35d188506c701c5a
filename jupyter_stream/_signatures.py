"""Signatures: the typed inputs and outputs of a predictor.

A signature is a class whose annotated attributes are ``InputField()`` / ``OutputField()``, with its
docstring as the task instructions, or a string ``"question, context -> reasoning, answer: int"``.

Example::

    >>> from jupyter_stream import Signature, InputField, OutputField
    >>> class QA(Signature):
    ...     '''Answer the question in one sentence.'''
    ...     question: str = InputField(desc="what the user asks")
    ...     answer: str = OutputField()
    >>> list(QA.input_fields), list(QA.output_fields), QA.instructions
    (['question'], ['answer'], 'Answer the question in one sentence.')
    >>> S = Signature("question -> reasoning, answer: int")
    >>> S.output_fields["answer"].annotation
    <class 'int'>
"""

from __future__ import annotations

import ast
import keyword
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ._exceptions import SignatureError

__all__ = ["Field", "InputField", "OutputField", "Signature", "ensure_signature", "make_signature"]


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a signature: its name, kind (``"input"`` or ``"output"``), type and description."""

    name: str
    kind: Literal["input", "output"]
    annotation: Any = str
    desc: str = ""
    prefix: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_str(self) -> bool:
        """True when the field holds plain text (its streamed chunks join to its value)."""
        return self.annotation is str

    def type_name(self) -> str:
        """The field's type written as a user would write it, e.g. ``list[str]``."""
        return _type_name(self.annotation)


class _FieldSpec:
    """What ``InputField()``/``OutputField()`` return; a class body turns it into a :class:`Field`."""

    __slots__ = ("kind", "desc", "prefix", "extra")

    def __init__(self, kind: str, desc: str, prefix: str | None, extra: dict[str, Any]) -> None:
        self.kind, self.desc, self.prefix, self.extra = kind, desc, prefix, extra

    def __repr__(self) -> str:
        return f"{'InputField' if self.kind == 'input' else 'OutputField'}(desc={self.desc!r})"


def InputField(*, desc: str = "", prefix: str | None = None, **extra: Any) -> Any:  # noqa: N802 - DSPy's name
    """Declare an input field in a class signature: ``question: str = InputField(desc="...")``."""
    return _FieldSpec("input", desc, prefix, extra)


def OutputField(*, desc: str = "", prefix: str | None = None, **extra: Any) -> Any:  # noqa: N802 - DSPy's name
    """Declare an output field in a class signature: ``answer: int = OutputField(desc="...")``."""
    return _FieldSpec("output", desc, prefix, extra)


class _SignatureMeta(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any) -> type:
        cls = super().__new__(mcs, name, bases, ns, **kw)
        if not bases:  # the Signature base class itself
            cls.fields, cls.input_fields, cls.output_fields = {}, {}, {}
            return cls
        fields: dict[str, Field] = {}
        for base in reversed(cls.__mro__[1:]):
            fields.update(getattr(base, "fields", {}) or {})
        annotations = ns.get("__annotations__", {})
        module_globals = vars(sys.modules.get(cls.__module__, object())) if cls.__module__ in sys.modules else {}
        for fname, spec in ns.items():
            if isinstance(spec, _FieldSpec):
                ann = annotations.get(fname, str)
                if isinstance(ann, str):
                    ann = _resolve_annotation(ann, {**module_globals, **ns}, where=f"{name}.{fname}")
                fields[fname] = Field(fname, spec.kind, ann, spec.desc, spec.prefix, spec.extra)  # type: ignore[arg-type]
        for fname in annotations:
            ann = annotations[fname]
            is_classvar = "ClassVar" in ann if isinstance(ann, str) else typing.get_origin(ann) is ClassVar
            if fname not in ns and fname not in fields and not fname.startswith("_") and not is_classvar:
                raise SignatureError(
                    f"field {fname!r} of signature {name} has a type but no InputField()/OutputField(); "
                    f"write `{fname}: ... = InputField()` or `= OutputField()`"
                )
        cls.fields = fields
        cls.input_fields = {k: f for k, f in fields.items() if f.kind == "input"}
        cls.output_fields = {k: f for k, f in fields.items() if f.kind == "output"}
        doc = ns.get("__doc__")
        if doc and doc.strip():
            cls.instructions = _dedent(doc)
        elif "instructions" not in ns:
            cls.instructions = _default_instructions(cls.input_fields, cls.output_fields)
        for fname in fields:
            if fname in ns:
                try:
                    delattr(cls, fname)
                except AttributeError:  # pragma: no cover - inherited
                    pass
        return cls

    def __call__(cls, signature: str | type[Signature] | None = None, instructions: str | None = None, **kw: Any) -> Any:
        if cls is Signature and signature is not None:
            return ensure_signature(signature, instructions, **kw)
        raise TypeError(f"{cls.__name__} is a signature class; use it as a type, not an instance")

    def __repr__(cls) -> str:
        if not hasattr(cls, "fields"):
            return super().__repr__()
        return f"{cls.__name__}({cls.signature})"

    @property
    def signature(cls) -> str:
        """The signature written as a string: ``"question -> answer: int"``."""

        def side(fs: dict[str, Field]) -> str:
            return ", ".join(n if f.annotation is str else f"{n}: {f.type_name()}" for n, f in fs.items())

        return f"{side(cls.input_fields)} -> {side(cls.output_fields)}"


class Signature(metaclass=_SignatureMeta):
    """The inputs and outputs of a predictor, with instructions.

    Subclass it with ``InputField``/``OutputField`` attributes, or call ``Signature("a, b -> c: int",
    "instructions")`` to build one from a string. ``fields``, ``input_fields`` and ``output_fields`` are
    ordered ``{name: Field}`` dicts; ``instructions`` is the docstring (or a default sentence).
    """

    fields: ClassVar[dict[str, Field]]
    input_fields: ClassVar[dict[str, Field]]
    output_fields: ClassVar[dict[str, Field]]
    instructions: ClassVar[str]

    @classmethod
    def with_instructions(cls, instructions: str) -> type[Signature]:
        """A copy of this signature with other instructions."""
        return build_signature(cls.__name__, list(cls.fields.values()), instructions)

    @classmethod
    def prepend(cls, name: str, fld: Any, type_: Any = str) -> type[Signature]:
        """A copy with one more field placed first among its kind (inputs or outputs)."""
        return cls._insert(name, fld, type_, first=True)

    @classmethod
    def append(cls, name: str, fld: Any, type_: Any = str) -> type[Signature]:
        """A copy with one more field placed last among its kind (inputs or outputs)."""
        return cls._insert(name, fld, type_, first=False)

    @classmethod
    def _insert(cls, name: str, fld: Any, type_: Any, *, first: bool) -> type[Signature]:
        if not isinstance(fld, _FieldSpec):
            raise SignatureError(f"{name!r}: pass InputField(...) or OutputField(...), not {fld!r}")
        _check_name(name, where=f"{cls.__name__}.{name}")
        new = Field(name, fld.kind, type_, fld.desc, fld.prefix, fld.extra)  # type: ignore[arg-type]
        ins = [f for f in cls.input_fields.values() if f.name != name]
        outs = [f for f in cls.output_fields.values() if f.name != name]
        group = ins if new.kind == "input" else outs
        group.insert(0 if first else len(group), new)
        # The instructions stay as they were, default sentence included (as in DSPy: ChainOfThought's prompt
        # still says "produce the fields `answer`"), so the prompts match DSPy's word for word.
        return build_signature(cls.__name__, ins + outs, cls.instructions)


# --------------------------------------------------------------------------------------------- building

def ensure_signature(
    signature: str | type[Signature], instructions: str | None = None, *, custom_types: dict[str, Any] | None = None,
) -> type[Signature]:
    """Return a signature class for a string or class (a class is returned as is unless instructions change)."""
    if isinstance(signature, str):
        names = _caller_names()
        if custom_types:
            names.update(custom_types)
        return make_signature(signature, instructions, custom_types=names)
    if isinstance(signature, type) and issubclass(signature, Signature) and signature is not Signature:
        return signature.with_instructions(instructions) if instructions is not None else signature
    raise SignatureError(
        f"expected a signature string like 'question -> answer' or a Signature subclass, got {signature!r}"
    )


def make_signature(
    text: str, instructions: str | None = None, *, custom_types: dict[str, Any] | None = None,
    name: str = "StringSignature",
) -> type[Signature]:
    """Parse ``"a, b: int -> c, d: list[str]"`` into a signature class.

    Types may be ``str`` (the default), ``int``, ``float``, ``bool``, ``list[...]``, ``dict[...]``,
    ``Literal[...]``, ``Optional[...]`` and names from ``custom_types`` (e.g. pydantic models).
    """
    if not isinstance(text, str):
        raise SignatureError(f"a signature string is needed, got {type(text).__name__}")
    arrows = _arrows(text)
    if len(arrows) != 1:
        raise SignatureError(
            f"signature {text!r} must contain exactly one '->' between inputs and outputs, "
            "e.g. 'question -> answer'"
        )
    left, right = text[: arrows[0]], text[arrows[0] + 2 :]
    names = dict(custom_types or {})
    ins = _parse_side(left, "input", names, text)
    outs = _parse_side(right, "output", names, text)
    if not outs:
        raise SignatureError(f"signature {text!r} has no output field; name at least one after '->'")
    seen: set[str] = set()
    for f in ins + outs:
        if f.name in seen:
            raise SignatureError(
                f"signature {text!r} names field {f.name!r} twice; every input and output needs its own name"
            )
        seen.add(f.name)
    return build_signature(name, ins + outs, instructions)


def build_signature(name: str, fields: list[Field], instructions: str | None) -> type[Signature]:
    """A signature class from its fields, in order (what the string parser and the DSPy bridge build).

    >>> from jupyter_stream._signatures import Field, build_signature
    >>> build_signature("QA", [Field("question", "input"), Field("answer", "output")], None).signature
    'question -> answer'
    """
    ns: dict[str, Any] = {"__annotations__": {}, "__module__": __name__}
    for f in fields:
        ns["__annotations__"][f.name] = f.annotation
        spec = (InputField if f.kind == "input" else OutputField)(desc=f.desc, prefix=f.prefix, **f.extra)
        ns[f.name] = spec
    if instructions is not None:
        ns["instructions"] = instructions
    cls = _SignatureMeta(name, (Signature,), ns)
    return cls  # type: ignore[return-value]


def _parse_side(part: str, kind: str, names: dict[str, Any], whole: str) -> list[Field]:
    part = part.strip()
    if not part:
        return []
    out = []
    for item in _split_top_level(part, whole):
        if ":" in item:
            fname, _, type_text = item.partition(":")
            fname, type_text = fname.strip(), type_text.strip()
            if not type_text:
                raise SignatureError(f"field {fname!r} in {whole!r} has ':' but no type; write e.g. '{fname}: int'")
            ann = _resolve_annotation(type_text, names, where=f"field {fname!r} in {whole!r}")
        else:
            fname, ann = item.strip(), str
        _check_name(fname, where=repr(whole))
        out.append(Field(fname, kind, ann))  # type: ignore[arg-type]
    return out


def _arrows(text: str) -> list[int]:
    """Where ``->`` occurs outside quoted ``Literal`` values."""
    out, quote, i, n = [], "", 0, len(text)
    while i < n:
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "-" and text.startswith("->", i):
            out.append(i)
            i += 1
        i += 1
    return out


def _split_top_level(part: str, whole: str) -> list[str]:
    items, depth, cur = [], 0, []
    quote = ""  # inside a quoted Literal value, brackets and commas are text
    for ch in part:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
            if depth < 0:
                raise SignatureError(f"unbalanced brackets in signature {whole!r}")
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SignatureError(f"unbalanced brackets in signature {whole!r}")
    items.append("".join(cur))
    for it in items:
        if not it.strip():
            raise SignatureError(f"signature {whole!r} has an empty field name (a stray comma?)")
    return items


def _check_name(fname: str, *, where: str) -> None:
    if not fname.isidentifier() or keyword.iskeyword(fname):
        raise SignatureError(
            f"{fname!r} in {where} is not a valid field name; use a Python identifier such as 'answer' or 'final_answer'"
        )
    if fname.startswith("_"):
        raise SignatureError(f"field name {fname!r} in {where} must not start with '_'")


_SAFE_NAMES: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict, "tuple": tuple,
    "List": list, "Dict": dict, "Tuple": tuple, "Literal": Literal, "Optional": typing.Optional,
    "Union": typing.Union, "Any": Any, "None": type(None),
}


def _resolve_annotation(text: str, names: dict[str, Any], *, where: str) -> Any:
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise SignatureError(f"cannot read the type {text!r} of {where}; write e.g. int, list[str] or Literal['a', 'b']") from None
    return _eval_type(node, names, text, where)


def _eval_type(node: ast.AST, names: dict[str, Any], text: str, where: str) -> Any:
    if isinstance(node, ast.Name):
        if node.id in _SAFE_NAMES:
            return _SAFE_NAMES[node.id]
        if node.id in names:
            return names[node.id]
        raise SignatureError(
            f"unknown type {node.id!r} for {where}; use str, int, float, bool, list[...], Literal[...], "
            f"or pass custom_types={{'{node.id}': {node.id}}}"
        )
    if isinstance(node, ast.Attribute):
        base = _eval_type(node.value, names, text, where)
        try:
            return getattr(base, node.attr)
        except AttributeError:
            raise SignatureError(f"unknown type {text!r} for {where}") from None
    if isinstance(node, ast.Constant):
        if node.value is None:  # `int | None`, `Optional[None]`
            return type(None)
        if node.value is Ellipsis:  # `tuple[int, ...]`
            return ...
        raise SignatureError(
            f"{node.value!r} is not a type (in {text!r} of {where}); use str, int, float, bool, list[...] "
            "or Literal[...]"
        )
    if isinstance(node, ast.Subscript):
        base = _eval_type(node.value, names, text, where)
        sl = node.slice
        args = sl.elts if isinstance(sl, ast.Tuple) else [sl]
        if base is Literal:
            vals = []
            for a in args:
                if not isinstance(a, ast.Constant):
                    raise SignatureError(f"Literal[...] of {where} takes constants only, got {ast.unparse(a)!r}")
                vals.append(a.value)
            return Literal[tuple(vals)]  # type: ignore[valid-type]
        params = tuple(_eval_type(a, names, text, where) for a in args)
        try:
            return base[params if len(params) > 1 else params[0]]
        except TypeError as e:
            raise SignatureError(f"invalid type {text!r} for {where}: {e}") from None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return typing.Union[_eval_type(node.left, names, text, where), _eval_type(node.right, names, text, where)]
    raise SignatureError(f"cannot read the type {text!r} of {where}; write e.g. int, list[str] or Literal['a', 'b']")


def _caller_names() -> dict[str, Any]:
    """Globals and locals of the nearest frame outside this package (the user's), so ``"x -> y: MyModel"``
    finds ``MyModel``."""
    frame = sys._getframe(1)
    names: dict[str, Any] = {}
    # Skip our own frames.
    while frame is not None and frame.f_globals.get("__name__", "").startswith("jupyter_stream"):
        frame = frame.f_back
    if frame is not None:
        names.update(frame.f_globals)
        names.update(frame.f_locals)
    return {k: v for k, v in names.items() if isinstance(v, type) or typing.get_origin(v) is not None}


def _default_instructions(ins: dict[str, Field], outs: dict[str, Field]) -> str:
    def q(fs: dict[str, Field]) -> str:
        return ", ".join(f"`{n}`" for n in fs)

    return f"Given the fields {q(ins)}, produce the fields {q(outs)}." if ins else f"Produce the fields {q(outs)}."


def _dedent(doc: str) -> str:
    import inspect

    return inspect.cleandoc(doc)


def _type_name(ann: Any) -> str:
    if ann is type(None):
        return "None"
    if isinstance(ann, type) and not typing.get_args(ann):
        return ann.__name__
    origin = typing.get_origin(ann)
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in typing.get_args(ann)) + "]"
    if origin is not None:
        name = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        if origin is typing.Union:
            return " | ".join(_type_name(a) for a in typing.get_args(ann))
        return f"{name}[" + ", ".join(_type_name(a) for a in typing.get_args(ann)) + "]"
    return str(ann).replace("typing.", "")

