"""Quickstart wall time and peak memory, as a user runs it (a fresh process, an empty results folder).

Also times the second, cached run (re-running a finished spec must be a no-op).

Usage: python benchmarks/quickstart_bench.py [--out benchmarks/out/quickstart.json]
Goals (issue 3): wall time under 60 s on 2 cores, peak RSS under 2 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def run_once(results_dir: Path) -> dict:
    """Run `mmsec quickstart --json` in a child process, sampling its RSS every 50 ms."""
    cmd = [sys.executable, "-c", "import sys; from mmsec.cli import main; sys.exit(main())",
           "quickstart", "--json", "--results-dir", str(results_dir)]
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"quickstart failed ({proc.returncode}): {stderr}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak / 2**20, 1), "summary": json.loads(stdout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/quickstart.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        first = run_once(Path(tmp))
        second = run_once(Path(tmp))
    s = first["summary"]
    print(f"{'run':<8} {'wall s':>8} {'peak RSS MB':>12}")
    print(f"{'fresh':<8} {first['wall_s']:>8} {first['peak_rss_mb']:>12}")
    print(f"{'cached':<8} {second['wall_s']:>8} {second['peak_rss_mb']:>12}")
    print(f"clean {s['clean_accuracy']:.3f}  noise@8/255 {s['noise_accuracy']:.3f}  robust "
          + "  ".join(f"{k}: {v:.3f}" for k, v in s["robust_accuracy"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "quickstart", "fresh": first, "cached": second,
                                    "goals": {"wall_s": 60, "peak_rss_mb": 2048}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
