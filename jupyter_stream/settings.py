"""Settings: which LM and adapter a program uses, and the callbacks it fires.

``configure(...)`` sets process-wide defaults; ``context(...)`` overrides them for a block of code, on a
``contextvars.ContextVar``, so concurrent asyncio tasks and threads never see each other's overrides.

Example::

    >>> import jupyter_stream as js
    >>> js.configure(adapter="json")
    >>> with js.context(adapter="xml"):
    ...     js.settings.current().adapter.name
    'xml'
    >>> js.settings.current().adapter.name
    'json'
    >>> js.configure(adapter=None)
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ._exceptions import ConfigurationError

if TYPE_CHECKING:
    from .adapters.base import Adapter
    from ._callbacks import BaseCallback
    from ._lm import LM

__all__ = ["Settings", "configure", "context", "current", "default_lm", "lm_with"]


@dataclass(frozen=True, slots=True)
class Settings:
    """A snapshot of the settings in force. Capture it to replay it later (``stream()`` does)."""

    lm: LM | None = None
    adapter: Adapter | None = None
    callbacks: tuple[BaseCallback, ...] = ()


_KEYS = frozenset(Settings.__dataclass_fields__)
_HOOKS = tuple(f"on_{kind}_{when}" for kind in ("module", "lm", "tool") for when in ("start", "end"))
_global = Settings()
_global_lock = threading.Lock()
_override: contextvars.ContextVar[Settings | None] = contextvars.ContextVar("jupyter_stream_settings", default=None)


def _normalise(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - _KEYS
    if unknown:
        raise ConfigurationError(
            f"unknown setting(s) {sorted(unknown)}; the settings are {sorted(_KEYS)}"
        )
    out = dict(kwargs)
    if out.get("adapter") is not None:
        from .adapters import get_adapter

        out["adapter"] = get_adapter(out["adapter"])
    if "lm" in out and out["lm"] is not None:
        from ._lm import LM

        if isinstance(out["lm"], str):
            out["lm"] = LM(out["lm"])
        elif not isinstance(out["lm"], LM):
            raise ConfigurationError(f"lm must be a jupyter_stream.LM or a model name, got {type(out['lm']).__name__}")
    if "callbacks" in out:
        cbs = out["callbacks"] or ()
        if not isinstance(cbs, Sequence) or isinstance(cbs, (str, bytes)):
            raise ConfigurationError("callbacks must be a list of BaseCallback instances")
        for cb in cbs:
            if not any(callable(getattr(cb, hook, None)) for hook in _HOOKS):
                raise ConfigurationError(
                    f"callbacks must be a list of BaseCallback instances, got {type(cb).__name__} {cb!r:.60}"
                )
        out["callbacks"] = tuple(cbs)
    return out


def configure(**kwargs: Any) -> None:
    """Set process-wide defaults: ``configure(lm=LM("openai/gpt-4o-mini"), adapter="json")``.

    Options: ``lm`` (an :class:`~jupyter_stream.LM` or a model name), ``adapter`` (``"chat"``,
    ``"json"``, ``"xml"`` or an Adapter instance), ``callbacks`` (a list of callbacks).
    Passing ``None`` resets an option.
    """
    global _global
    changes = _normalise(kwargs)
    with _global_lock:
        _global = replace(_global, **changes)


@contextmanager
def context(**kwargs: Any) -> Iterator[Settings]:
    """Override settings inside a ``with`` block, for this task or thread only.

    >>> import jupyter_stream as js
    >>> with js.context(adapter="json") as s:
    ...     s.adapter.name
    'json'
    """
    changes = _normalise(kwargs)
    new = replace(current(), **changes)
    token = _override.set(new)
    try:
        yield new
    finally:
        _override.reset(token)


def current() -> Settings:
    """The settings in force here: the innermost ``context(...)``, else the ``configure(...)`` defaults."""
    return _override.get() or _global


def adopt(snapshot: Settings) -> None:
    """Make ``snapshot`` the settings in force in the current context for good: for a context made to run
    one call (``ctx.run(adopt, snapshot)``, what a stream does with the settings it captured)."""
    _override.set(snapshot)


@contextmanager
def use(snapshot: Settings) -> Iterator[None]:
    """Replay a captured snapshot (internal: ``stream()`` captures settings when it is called)."""
    token = _override.set(snapshot)
    try:
        yield
    finally:
        _override.reset(token)


def lm_with(*, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
            temperature: float | None = None, cache: bool | None = None) -> LM | None:
    """The LM in force with some options changed: what ``--model``, ``--base-url``, ``--temperature`` and
    ``--no-cache`` mean for ``%%stream``, ``jupyter-stream run`` and ``jupyter-stream serve``.

    A copy of the configured LM (its server and key kept; the demo LM when none is configured); a new
    ``LM(model)`` when only a model is named and none is configured. A new ``base_url`` never takes the
    configured key along to another server: the key goes with it only when given. None when nothing changes.

    >>> import jupyter_stream as js
    >>> with js.context(lm=js.LM("m", base_url="http://127.0.0.1:9/v1", api_key="k")):
    ...     js.settings.lm_with(model="other", temperature=0.5)
    LM('other', base_url='http://127.0.0.1:9/v1', temperature=0.5, cache=True)
    >>> js.settings.lm_with() is None
    True
    """
    changes: dict[str, Any] = {k: v for k, v in (("model", model), ("base_url", base_url), ("api_key", api_key),
                                                  ("temperature", temperature), ("cache", cache)) if v is not None}
    if not changes:
        return None
    if base_url is not None:
        changes["api_key"] = api_key
    base = current().lm
    if base is None:
        from ._lm import LM

        if model:
            return LM(changes.pop("model"), **changes)
        base = default_lm()
    return base.copy(**changes)


def default_lm() -> LM:
    """The LM a program runs on when none is configured: the built-in demo LM (its loopback server starts on
    first use, with a one-line notice), unless ``OPENAI_API_KEY`` is set: then a ConfigurationError says to
    configure one. The one place that reaches into :mod:`jupyter_stream.demo`."""
    from .demo.default import demo_lm

    return demo_lm()
