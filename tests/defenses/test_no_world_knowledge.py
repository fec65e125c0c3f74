"""Defenses and merging methods take class names, prompts and captions from their inputs: no module under
``mmsec/defenses`` or ``mmsec/merging`` imports the shapes world (``mmsec.data.shapes*``) or the zoo
(``mmsec.zoo``), not even lazily inside a function. Checked on the source's syntax tree (docstring
examples do not count), so the check does not depend on what happens to be imported at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGES = ("mmsec/defenses", "mmsec/merging")
FORBIDDEN = ("mmsec.data.shapes", "mmsec.zoo")  # and their submodules (mmsec.data.shapes_tasks too)
ALLOWED: set[tuple[str, str]] = set()  # (file, module) exceptions: none


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, relative ones resolved against
    ``module``; ``from a import b`` yields both ``a`` and ``a.b`` (b may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return out


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") or name.startswith(f + "_") for f in FORBIDDEN)


def violations(path: Path) -> list[str]:
    rel = str(path.relative_to(SRC))
    found = imported_modules(path.read_text(), _module_name(path), path.name == "__init__.py")
    return [f"{rel}:{line} imports {name}" for line, name in found if _forbidden(name) and (rel, name) not in ALLOWED]


FILES = sorted(p for pkg in PACKAGES for p in (SRC / pkg).rglob("*.py"))


def test_the_walk_finds_the_method_files():
    names = {str(p.relative_to(SRC)) for p in FILES}
    assert {"mmsec/defenses/backdoor/invertune.py", "mmsec/defenses/backdoor/safeclip.py",
            "mmsec/merging/tasks.py", "mmsec/merging/finetune.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC / "mmsec")))
def test_no_shapes_world_or_zoo_import(path):
    assert not violations(path)


@pytest.mark.parametrize("line", [
    "from ...data.shapes import zeroshot_prompts",
    "from ...data import shapes",
    "from ...zoo.train import recipe_start",
    "import mmsec.zoo",
    "from mmsec.data.shapes_tasks import TASKS",
    "def f():\n    from ... import zoo",
])
def test_the_check_catches_each_spelling(line):
    """The checker itself can fail: every way of writing the import is seen (here in defenses/backdoor/x.py)."""
    found = imported_modules(line, "mmsec.defenses.backdoor.x")
    assert any(_forbidden(name) for _, name in found), found


def test_the_check_passes_generic_imports():
    found = imported_modules("from ...data.datasets import ImageTextData\nfrom ...models.zeroshot import embed_images",
                             "mmsec.defenses.backdoor.x")
    assert not any(_forbidden(name) for _, name in found), found
