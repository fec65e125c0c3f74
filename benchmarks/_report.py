"""What every benchmark script shares: its --threads / --out arguments, the thread pinning, and what it
writes beside its table (the environment and the JSON report)."""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path


def add_common_args(parser: argparse.ArgumentParser, out: Path) -> None:
    """``--threads`` (torch threads, default 1: two cores are shared) and ``--out`` (the JSON report)."""
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=out)


def pin_threads(threads: int) -> None:
    """Pin OpenMP and torch to ``threads`` (call before anything imports torch)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)


def environment(threads: int) -> dict:
    """torch and Python versions, torch threads, UTC time: enough to tell two runs apart."""
    import torch

    return {"torch": torch.__version__, "python": platform.python_version(), "threads": threads,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_report(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
