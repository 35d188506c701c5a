"""ARCHITECTURE.md is the contract: its layer block governs every import of the package (function-local
imports included), there is no import cycle, and every ``path:Name`` it cites exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "ARCHITECTURE.md").read_text("utf-8")


def _layers() -> list[list[str]]:
    """The layer block, top layer first: each layer a list of sibling packages/modules."""
    block = re.search(r"```layers\n(.*?)```", DOC, re.S)
    assert block, "ARCHITECTURE.md has no ```layers block"
    return [[name.strip() for name in line.split("|")] for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("jupyter_stream", include_external_packages=False, exclude_type_checking_imports=True)


def _place(module: str, layers: list[list[str]]) -> tuple[int, str] | None:
    """(layer index, sibling) of ``module``: the longest layer name it is or is inside."""
    best = None
    for i, siblings in enumerate(layers):
        for name in siblings:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (i, name)
    return best


def test_every_module_has_a_layer(graph):
    layers = _layers()
    assert [m for m in sorted(graph.modules) if _place(m, layers) is None] == []


def test_imports_point_down_the_layers(graph):
    layers = _layers()
    wrong = []
    for importer in sorted(graph.modules):
        i, mine = _place(importer, layers)
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            j, theirs = _place(imported, layers)
            if j > i or (j == i and theirs == mine):
                continue  # a lower layer, or inside one's own package
            lines = [d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)]
            wrong.append(f"{importer} -> {imported} (line {lines}): {theirs!r} is "
                         f"{'a sibling of' if j == i else 'above'} {mine!r}")
    assert wrong == [], "\n".join(wrong)


def test_no_import_cycle(graph):
    modules = sorted(graph.modules)
    cycles = [m for m in modules
              if any(m in graph.find_upstream_modules(d) or d == m for d in graph.find_modules_directly_imported_by(m))]
    details = []
    for m in cycles:
        for d in graph.find_modules_directly_imported_by(m):
            if d == m or m in graph.find_upstream_modules(d):
                details.append(f"{m} -> {d}: {graph.find_shortest_chain(importer=d, imported=m)}")
    assert cycles == [], "\n".join(details)


_REF = re.compile(r"`((?:jupyter_stream|labextension)/[\w/]+\.(?:py|ts)):([A-Za-z_][\w.]*)`")


@pytest.mark.parametrize("path, name", sorted(set(_REF.findall(DOC))))
def test_every_name_the_map_cites_exists(path, name):
    if path.endswith(".py"):
        module = importlib.import_module(path[:-3].replace("/", ".").removesuffix(".__init__"))
        obj = module
        for part in name.split("."):
            assert hasattr(obj, part), f"{path} has no {name}"
            obj = getattr(obj, part)
        return
    source = (ROOT / path).read_text("utf-8")
    owner, _, member = name.rpartition(".")
    if owner:
        body = re.search(rf"\bclass {owner}\b(.*?)(?=\n(?:export )?(?:class|function) |\Z)", source, re.S)
        assert body and re.search(rf"\n  (?:readonly |private |async )*{member}\b", body.group(1)), f"{path} has no {name}"
    else:
        assert re.search(rf"\b(?:function|class|const) {name}\b", source), f"{path} has no {name}"


def test_the_map_cites_the_path_of_a_token():
    assert len(set(_REF.findall(DOC))) >= 20
