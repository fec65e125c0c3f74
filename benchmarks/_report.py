"""What every benchmark script writes beside its table: the environment, and the JSON report."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path


def environment(threads: int) -> dict:
    """torch and Python versions, torch threads, UTC time: enough to tell two runs apart."""
    import torch

    return {"torch": torch.__version__, "python": platform.python_version(), "threads": threads,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_report(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
