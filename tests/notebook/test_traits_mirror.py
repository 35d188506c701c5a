"""The front end's one interface of the widget's traits (labextension/src/traits.ts) mirrors the Python
widget: the same synced traits, by name, and the statuses the Python side allows."""

from __future__ import annotations

import re
from pathlib import Path

import anywidget

from jupyter_stream.notebook.widget import STATUSES, StreamWidget

TRAITS_TS = Path(__file__).resolve().parents[2] / "labextension" / "src" / "traits.ts"


def _interface(source: str, name: str) -> str:
    found = re.search(r"export interface " + name + r" \{(.*?)\n\}", source, re.S)
    assert found, f"no interface {name} in {TRAITS_TS}"
    return found.group(1)


def test_traits_interface_names_every_synced_trait_of_the_widget():
    body = _interface(TRAITS_TS.read_text("utf-8"), "Traits")
    in_ts = set(re.findall(r"^\s+(\w+)\??:", body, re.M))
    in_python = set(StreamWidget.class_traits(sync=True)) - set(anywidget.AnyWidget.class_traits(sync=True))
    assert in_ts == in_python


def test_status_type_lists_the_python_statuses():
    found = re.search(r"export type Status = ([^;]+);", TRAITS_TS.read_text("utf-8"))
    assert found
    assert set(re.findall(r'"(\w+)"', found.group(1))) == set(STATUSES)
