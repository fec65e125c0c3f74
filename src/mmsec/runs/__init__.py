"""Runs: experiment specs, grid expansion, the SQLite results store, resume, and a Ray backend.

    from mmsec.runs import load_spec, run_spec, query, format_results
    run_spec("recipes/quickstart.yaml", "mmsec-results")           # resumable, skips finished cells
    print(format_results(query("mmsec-results", "quickstart")))     # robust accuracy per eps
"""

from .grid import Cell, expand, spec_hash
from .results import format_results, query
from .runner import run_spec
from .spec import Spec, SpecError, load_spec
from .store import ResultsStore, StoreError

__all__ = ["Cell", "ResultsStore", "Spec", "SpecError", "StoreError", "expand", "format_results", "load_spec",
           "query", "run_spec", "spec_hash"]
