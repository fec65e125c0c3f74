"""docs/METHODS.md tells the truth about the defenses, detectors and merging methods: each row's registry
column names registered entries of the stated kind living in the row's file, and every registered
entry of those kinds has a row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmsec import builtins, registry

builtins.load()

DOC = Path(__file__).resolve().parents[2] / "docs" / "METHODS.md"
OWNED = ("defenses/", "merging/")  # the rows of these files
KINDS = ("defenses", "pretraining_defenses", "repairs", "model_detectors", "detectors", "merging",
         "diffusion_model_detectors", "diffusion_input_detectors", "diffusion_repairs")
NOT_METHODS = {"defenses/detection/neighbors.py"}  # a building block (the detectors' backend), not registered


def rows() -> list[dict]:
    out = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[2].startswith("`"):
            continue
        file = re.match(r"`([^`]+)`", cells[2]).group(1)
        if not file.startswith(OWNED):
            continue
        registry_cell = cells[3]
        names = [] if registry_cell.startswith("-") else re.findall(r"`([a-z0-9_]+)`", registry_cell.split("(")[0])
        hint = re.search(r"\(([a-z_]+)", registry_cell)
        kind = hint.group(1) if hint and hint.group(1) in KINDS else "defenses"
        out.append({"method": cells[0], "file": file, "names": names, "kind": kind})
    return out


ROWS = rows()


def test_the_table_has_the_rows():
    assert len(ROWS) >= 17
    assert {r["kind"] for r in ROWS} == set(KINDS)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r["method"][:30])
def test_each_row_names_registered_entries_in_its_file(row):
    if row["file"] in NOT_METHODS:
        assert not row["names"]
        return
    assert row["names"], f"{row['method']}: no registry name"
    for name in row["names"]:
        entry = registry.get(row["kind"], name)
        assert entry.file.startswith("mmsec/" + row["file"]), (name, entry.file, row["file"])


def test_every_registered_entry_of_these_kinds_has_a_row():
    documented = {(r["kind"], n) for r in ROWS for n in r["names"]}
    registered = {(k, e.name) for k in KINDS for e in registry.entries(k)}
    assert registered == documented
