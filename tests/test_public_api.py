"""The public surface: pinned names, DSPy's streaming names, docstrings, and a notebook-free engine import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import jupyter_stream
import jupyter_stream.streaming

PUBLIC = [
    "Adapter",
    "AdapterParseError",
    "BaseCallback",
    "ChainOfThought",
    "ChatAdapter",
    "CompareResult",
    "Comparison",
    "ConfigurationError",
    "InputError",
    "InputField",
    "JSONAdapter",
    "JupyterStreamError",
    "LM",
    "LMError",
    "LMRequest",
    "LMResponse",
    "ListenerError",
    "Module",
    "OutputField",
    "Predict",
    "Prediction",
    "RecordingError",
    "Replay",
    "Run",
    "Signature",
    "SignatureError",
    "StatusMessage",
    "StatusMessageProvider",
    "Stream",
    "StreamError",
    "StreamListener",
    "StreamResponse",
    "StreamTimeoutError",
    "TextRenderer",
    "Tool",
    "UsageError",
    "VariantDone",
    "VariantEvent",
    "XMLAdapter",
    "acompare",
    "apply_sync_streaming",
    "asgi_app",
    "compare",
    "configure",
    "context",
    "diff",
    "load_ipython_extension",
    "load_recording",
    "record",
    "replay",
    "runs",
    "settings",
    "show",
    "stream",
    "streamify",
    "streaming_response",
]

DSPY_STREAMING = [
    "streamify",
    "StreamListener",
    "StreamResponse",
    "StatusMessage",
    "StatusMessageProvider",
    "apply_sync_streaming",
    "streaming_response",
]

NOTEBOOK_MODULES = ["IPython", "ipywidgets", "ipykernel", "anywidget"]
PACKAGE_DIR = Path(jupyter_stream.__file__).parent


def test_all_is_sorted():
    assert jupyter_stream.__all__ == sorted(jupyter_stream.__all__)


def test_all_is_pinned():
    assert jupyter_stream.__all__ == PUBLIC


def test_all_names_exist_and_are_unique():
    assert len(set(jupyter_stream.__all__)) == len(jupyter_stream.__all__)
    for name in jupyter_stream.__all__:
        assert hasattr(jupyter_stream, name), name


def test_streaming_has_dspys_names_and_stream():
    names = jupyter_stream.streaming.__all__
    for name in [*DSPY_STREAMING, "stream"]:
        assert name in names, name
        assert getattr(jupyter_stream.streaming, name) is getattr(jupyter_stream, name)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_a_docstring(name):
    obj = getattr(jupyter_stream, name)
    doc = obj.__doc__
    assert isinstance(doc, str) and doc.strip(), f"jupyter_stream.{name} has no docstring"
    if isinstance(obj, type) and obj.__doc__ is not None:
        # A class must not merely inherit its parent's docstring.
        assert "__doc__" in vars(obj) and vars(obj)["__doc__"], f"jupyter_stream.{name} inherits its docstring"


def test_version():
    assert jupyter_stream.__version__ == "0.1.0"


def _engine_modules() -> list[str]:
    """Every module of the package but the notebook layer, the ``__main__`` scripts and the DSPy bridge
    (which imports ``dspy``, and ``dspy`` itself imports IPython: it is loaded only for a DSPy program)."""
    out = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR)
        if rel.parts[0] == "notebook" or rel.name == "__main__.py" or rel.name == "_dspy_bridge.py":
            continue
        parts = ["jupyter_stream", *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


def test_engine_module_list_is_complete():
    mods = _engine_modules()
    for required in ["jupyter_stream", "jupyter_stream._lm", "jupyter_stream._cli", "jupyter_stream._terminal",
                     "jupyter_stream.streaming.stream", "jupyter_stream.demo.server", "jupyter_stream.adapters.chat"]:
        assert required in mods
    assert not any(m.startswith("jupyter_stream.notebook") for m in mods)


def test_engine_import_leaves_notebook_packages_unloaded():
    mods = _engine_modules()
    code = (
        "import importlib, json, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "import jupyter_stream as js\n"
        "js.Predict('question -> answer'); js.ChainOfThought('question -> answer')\n"
        f"print(json.dumps([n for n in {NOTEBOOK_MODULES!r} if n in sys.modules]))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('jupyter_stream'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded_notebook, loaded_ours = [json.loads(line) for line in proc.stdout.splitlines()[-2:]]
    assert loaded_notebook == []
    assert set(mods) <= set(loaded_ours)
    assert not any(m.startswith("jupyter_stream.notebook") for m in loaded_ours)


def test_plain_import_is_notebook_free():
    code = (
        "import json, sys, jupyter_stream\n"
        f"print(json.dumps([n for n in {NOTEBOOK_MODULES!r} if n in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_import_and_native_streaming_never_load_dspy_or_litellm():
    """``import jupyter_stream`` and streaming a native program load neither, even where DSPy is installed."""
    code = (
        "import json, sys, jupyter_stream as js\n"
        "from jupyter_stream.demo import DemoServer\n"
        "server = DemoServer().start()\n"
        "js.configure(lm=js.LM('demo', base_url=server.url, api_key='k', cache=False))\n"
        "events = list(js.stream(js.ChainOfThought('question -> answer'), None, {'question': 'q'}))\n"
        "assert isinstance(events[-1], js.Prediction)\n"
        "server.stop()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('dspy', 'litellm') or m == 'jupyter_stream._dspy_bridge')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_prediction_copies_and_pickles():
    import copy
    import pickle

    pred = jupyter_stream.Prediction.from_dict({"reasoning": "r", "answer": "Paris"}, usage={"m": {"total_tokens": 3}})
    for clone in (pickle.loads(pickle.dumps(pred)), copy.copy(pred), copy.deepcopy(pred)):
        assert clone == pred
        assert clone.to_dict() == {"reasoning": "r", "answer": "Paris"}
        assert clone.get_lm_usage() == {"m": {"total_tokens": 3}}


def test_prediction_missing_field_and_uninitialised_instance():
    pred = jupyter_stream.Prediction(answer="Paris")
    with pytest.raises(AttributeError, match=r"Prediction has no field 'nope'; its fields are \['answer'\]"):
        pred.nope
    assert not hasattr(pred, "__array__")
    blank = jupyter_stream.Prediction.__new__(jupyter_stream.Prediction)
    with pytest.raises(AttributeError):  # not a RecursionError
        blank.answer
