"""The variants of a comparison: the compare spec, each variant's label, and what a variant changes.

One spec names one key and its values, comma-separated: ``model=gpt-4o-mini,gpt-4.1-mini``,
``adapter=chat,json,xml``, ``temperature=0,0.7``, ``instructions={terse},{kind}``, ``lm={lm_a},{lm_b}`` or
``program={prog_b}`` (the program compared is then the first variant). ``{name}`` takes a value from
``namespace`` (the user's variables in a notebook). From code, a variant is a dict of the same keys, plus an
optional ``label``. Every mistake is one :class:`~jupyter_stream.ConfigurationError` raised here, before
any request. A variant inherits the settings in force (the configured LM's server and key: ``model=`` asks
the same server for another model) except what it sets.

    >>> from jupyter_stream._variants import parse_spec
    >>> parse_spec("model=gpt-4o-mini,gpt-4.1-mini")
    [{'model': 'gpt-4o-mini', 'label': 'model=gpt-4o-mini'}, {'model': 'gpt-4.1-mini', 'label': 'model=gpt-4.1-mini'}]
    >>> [v["label"] for v in parse_spec("instructions={terse},{kind}", namespace={"terse": "Be brief.", "kind": "Be kind."})]
    ['instructions={terse}', 'instructions={kind}']
    >>> parse_spec("temperature=0,hot")
    Traceback (most recent call last):
    ...
    jupyter_stream._exceptions.ConfigurationError: compare temperature=hot: not a number; write e.g. temperature=0,0.7
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _programs as programs
from . import settings as _settings
from ._exceptions import ConfigurationError

__all__ = ["KEYS", "MAX_VARIANTS", "Variant", "check_value", "label_of", "parse_spec", "prepare", "resolve"]

KEYS = ("model", "adapter", "temperature", "instructions", "lm", "program")
"""What a variant can set, in the order its label names them."""
MAX_VARIANTS = 8
_EXAMPLE = "write e.g. model=gpt-4o-mini,gpt-4.1-mini"
_NAME = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ADAPTERS = ("chat", "json", "xml")


@dataclass(slots=True)
class Variant:
    """One variant, ready to run: its label, the program it runs and the settings it runs under."""

    label: str
    program: Any
    settings: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for :func:`jupyter_stream.context` (``lm``, ``adapter``)."""
    dspy_options: dict[str, Any] | None = None
    """For a DSPy program: the arguments of its bridge's ``variant_options`` (DSPy's own settings)."""
    made_lm: Any = None
    """The LM made for this variant (a copy of the configured one), closed when the comparison ends."""


def parse_spec(spec: str, *, namespace: Mapping[str, Any] | None = None, base: str | None = None) -> list[dict[str, Any]]:
    """The variants a spec names, as dicts with their labels (``program=`` puts the program compared first,
    labelled ``program={base}``, or ``program`` without ``base``, the name the program goes by)."""
    key, sep, rest = spec.strip().partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigurationError(f"compare {spec.strip()!r}: write KEY=VALUE,VALUE ({_EXAMPLE})")
    _check_key(key)
    texts = [part.strip() for part in rest.split(",")]
    if any(not t for t in texts):
        raise ConfigurationError(f"compare {key}={rest.strip()}: an empty value; write the values comma-separated, {_EXAMPLE}")
    out: list[dict[str, Any]] = []
    if key == "program":
        out.append({"label": f"program={{{base}}}" if base else "program"})
    for text in texts:
        name = _NAME.fullmatch(text)
        if name is not None:
            ns = namespace or {}
            if name.group(1) not in ns:
                where = "no such variable" if namespace is not None else "no namespace to look it up in (pass namespace=...)"
                raise ConfigurationError(f"compare {key}={text}: {where}; define {name.group(1)} first, or write the value itself")
            value = ns[name.group(1)]
        elif key in ("lm", "program"):
            raise ConfigurationError(f"compare {key}={text}: {key} takes variables, e.g. {key}={{{key}_a}},{{{key}_b}}")
        else:
            value = text
        out.append({key: check_value(key, value, text), "label": f"{key}={text}"})
    return out


def check_value(key: str, value: Any, text: str | None = None) -> Any:
    """``value`` made valid for ``key`` (a temperature as a float), or one ConfigurationError naming it."""
    shown = text if text is not None else _short(value)
    if key == "temperature":
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"compare temperature={shown}: not a number; write e.g. temperature=0,0.7") from None
        if not 0 <= number <= 2:
            raise ConfigurationError(f"compare temperature={shown}: out of range; a temperature is from 0 to 2")
        return number
    if key == "adapter":
        if isinstance(value, str) and value.strip().lower() not in _ADAPTERS:
            raise ConfigurationError(f"compare adapter={shown}: unknown adapter; use {', '.join(_ADAPTERS)}")
        if not isinstance(value, str):
            from .adapters import Adapter

            if not isinstance(value, Adapter):
                raise ConfigurationError(f"compare adapter={shown}: not an adapter; use {', '.join(_ADAPTERS)}")
        return value
    if key in ("model", "instructions"):
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(f"compare {key}={shown}: {key} must be a non-empty string")
        return value
    if key == "lm":
        from ._lm import LM

        if not isinstance(value, LM) and not _is_dspy_lm(value):
            raise ConfigurationError(
                f"compare lm={shown}: not an LM (got {type(value).__name__}); use jupyter_stream.LM(...), or model= for a name"
            )
        return value
    if key == "program":
        if not programs.is_program(value):
            raise ConfigurationError(
                f"compare program={shown}: not a program (got {type(value).__name__}); use a Module, Predict or DSPy module"
            )
        return value
    _check_key(key)
    return value


def label_of(variant: Mapping[str, Any]) -> str:
    """A short label for a variant given as a dict (its own ``label`` if it has one).

    >>> label_of({"model": "gpt-4o-mini", "temperature": 0.7}), label_of({})
    ('model=gpt-4o-mini, temperature=0.7', 'base')
    """
    if variant.get("label"):
        return str(variant["label"])
    parts = [f"{k}={_short(variant[k])}" for k in KEYS if k in variant]
    return ", ".join(parts) or "base"


def resolve(variants: str | Sequence[Mapping[str, Any]], *, namespace: Mapping[str, Any] | None = None,
            base: str | None = None) -> list[dict[str, Any]]:
    """Checked variants with unique labels, from a spec or a list of dicts; 2 to 8 of them."""
    if isinstance(variants, str):
        items = parse_spec(variants, namespace=namespace, base=base)
    elif isinstance(variants, Sequence) and all(isinstance(v, Mapping) for v in variants):
        items = []
        for v in variants:
            for k in v:
                if k != "label":
                    _check_key(k)
            items.append({**{k: check_value(k, x) for k, x in v.items() if k != "label"}, "label": label_of(v)})
    else:
        raise ConfigurationError(
            f"variants must be a spec such as 'model=a,b' or a list of dicts such as [{{'model': 'a'}}, "
            f"{{'model': 'b'}}], got {type(variants).__name__}"
        )
    if not 2 <= len(items) <= MAX_VARIANTS:
        raise ConfigurationError(f"compare needs 2 to {MAX_VARIANTS} variants, got {len(items)}; {_EXAMPLE}")
    seen: dict[str, int] = {}
    for item in items:
        label = item["label"]
        n = seen[label] = seen.get(label, 0) + 1
        if n > 1:
            item["label"] = f"{label} #{n}"
    return items


def prepare(program: Any, variant: Mapping[str, Any]) -> Variant:
    """What ``variant`` (a checked dict) runs: call it inside the settings to inherit (``lm_with`` reads them)."""
    run = variant.get("program", program)
    if "instructions" in variant:
        run = _with_instructions(run, variant["instructions"])
    model, temperature, lm, adapter = (variant.get(k) for k in ("model", "temperature", "lm", "adapter"))
    if lm is not None and model is not None:
        raise ConfigurationError(f"variant {variant['label']}: sets both lm and model; the LM names its model, set one")
    bridge = programs.dspy_bridge(run)
    if bridge is not None:
        opts = {"model": model, "temperature": temperature, "adapter": adapter if isinstance(adapter, str) else None}
        if lm is not None or (adapter is not None and not isinstance(adapter, str)):
            raise ConfigurationError(f"variant {variant['label']}: a DSPy program compares by model=, adapter= (by "
                                     "name), temperature=, instructions= or program=, not by our LM or Adapter objects")
        return Variant(variant["label"], run, dspy_options=opts)
    settings: dict[str, Any] = {}
    if lm is not None:
        if _is_dspy_lm(lm):
            raise ConfigurationError(f"variant {variant['label']}: lm is a dspy.LM; use jupyter_stream.LM(...)")
        made = lm.copy(temperature=temperature) if temperature is not None else None
        settings["lm"] = made or lm
    else:
        made = _settings.lm_with(model=model, temperature=temperature)
        if made is not None:
            settings["lm"] = made
    if adapter is not None:
        settings["adapter"] = adapter
    return Variant(variant["label"], run, settings, made_lm=made)


def _with_instructions(program: Any, text: str) -> Any:
    """A copy of a one-predictor program whose predictor has ``text`` for instructions (the rest shared)."""
    named = programs.named_predictors(program)
    if len(named) != 1 or not re.fullmatch(r"self|[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", named[0][0]):
        names = ", ".join(n for n, _ in named) or "none"
        raise ConfigurationError(
            f"compare instructions=: {type(program).__name__} has {len(named)} predictors ({names}); instructions "
            "compare one-predictor programs: compare programs with program={...} instead"
        )
    path = named[0][0]
    top = copy.copy(program)
    owner, attr = top, None
    if path != "self":
        *parents, attr = path.split(".")
        for part in parents:
            child = copy.copy(getattr(owner, part))
            setattr(owner, part, child)
            owner = child
    if attr is None:
        owner.signature = owner.signature.with_instructions(text)
    else:
        predictor = copy.copy(getattr(owner, attr))
        predictor.signature = predictor.signature.with_instructions(text)
        setattr(owner, attr, predictor)
    return top


def _check_key(key: str) -> None:
    if key not in KEYS:
        raise ConfigurationError(f"compare {key}=: unknown key {key!r}; compare by {', '.join(KEYS)}")


def _is_dspy_lm(value: Any) -> bool:
    return type(value).__module__.startswith("dspy") and hasattr(value, "model")


def _short(value: Any, width: int = 24) -> str:
    """A value as a label shows it: a model's name for an LM, an adapter's name, text cut to ``width``."""
    if isinstance(value, float):
        return f"{value:g}"
    if hasattr(value, "model") and isinstance(getattr(value, "model"), str):
        return str(value.model)
    name = getattr(value, "name", None)
    if isinstance(name, str) and not isinstance(value, str):
        return name
    if programs.is_program(value):
        return type(value).__name__
    text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
