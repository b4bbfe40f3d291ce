"""The shape rules of docs/ARCHITECTURE.md, kept by tests: no import cycle, no private name imported from
another module, no import from a lower layer to a higher one, small modules and functions, few entries
under ``nearid/``; and every module path of the flat layout before the packages still imports its names."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from tests import code_shape

SHAPE = code_shape.read_shape()


def test_no_import_cycle():
    assert code_shape.cycles(SHAPE) == []


def test_no_private_name_is_imported_from_another_module():
    assert SHAPE.private_imports == []


def test_no_import_goes_up_the_layers():
    assert code_shape.upward_imports(SHAPE) == []


def test_every_package_has_a_layer():
    packages = {code_shape.top_package(name) for name in SHAPE.modules} - {""}
    assert {p for p in packages if code_shape.layer_of(p) is None} == set()


def test_modules_are_small():
    over = [(n, name) for n, name in code_shape.module_lengths(SHAPE) if n > code_shape.MAX_MODULE_LINES]
    assert over == [], f"modules over {code_shape.MAX_MODULE_LINES} lines: split them"


def test_functions_are_small():
    over = [(n, name) for n, name in code_shape.function_lengths(SHAPE) if n > code_shape.MAX_FUNCTION_LINES]
    assert over == [], f"functions over {code_shape.MAX_FUNCTION_LINES} lines: split them"


def test_few_entries_directly_under_the_package():
    entries = code_shape.top_entries()
    assert len(entries) <= code_shape.MAX_TOP_ENTRIES, entries


def test_architecture_page_lists_every_module():
    """docs/ARCHITECTURE.md stays true: every module (package faces aside) has a row in its module table,
    and no row names a module that is gone."""
    import re

    page = (code_shape.ROOT.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([\w/]+\.py)` \|", page, flags=re.M))
    modules = {
        str(path.relative_to(code_shape.ROOT / "nearid"))
        for path in SHAPE.modules.values()
        if path.name != "__init__.py" or path.parent == code_shape.ROOT / "nearid"
    }
    assert sorted(modules - rows) == [], "modules without a row in docs/ARCHITECTURE.md"
    assert sorted(rows - modules) == [], "rows of modules that are gone"


def test_the_rules_see_a_violation(tmp_path):
    """The checks are not vacuous: a small tree with a cycle, a private import and an upward import."""
    package = tmp_path / "nearid"
    for sub in ("io", "cli"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "io" / "a.py").write_text("from nearid.io.b import _hidden\nimport nearid.cli.c\n")
    (package / "io" / "b.py").write_text("def _hidden():\n    from nearid.io import a\n")
    (package / "cli" / "c.py").write_text("x = 1\n")
    shape = code_shape.read_shape(tmp_path)
    assert code_shape.cycles(shape) == [["nearid.io.a", "nearid.io.b"]]
    assert shape.private_imports == [("nearid.io.a", "nearid.io.b", "_hidden")]
    assert code_shape.upward_imports(shape) == [("nearid.io.a", "nearid.cli.c")]


OLD_PATHS = json.loads((Path(__file__).parent / "old_module_paths.json").read_text())


@pytest.mark.parametrize("module", sorted(OLD_PATHS))
def test_every_old_module_path_still_imports_its_public_names(module):
    imported = importlib.import_module(module)
    missing = [name for name in OLD_PATHS[module] if not hasattr(imported, name)]
    assert missing == []


def test_an_old_path_gives_the_objects_of_the_new_one():
    from nearid.bench.store import EmbeddingStore
    from nearid.models.encoders import load_encoder

    assert importlib.import_module("nearid.store").EmbeddingStore is EmbeddingStore
    assert importlib.import_module("nearid.encoders").load_encoder is load_encoder
