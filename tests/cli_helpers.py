"""Helpers for the CLI's error-path tests: run it in a subprocess (optionally with file permissions enforced)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mmsec

SRC = str(Path(mmsec.__file__).resolve().parents[1])  # the mmsec under test (a worktree's src, or site-packages)
MAIN = "import sys; from mmsec.cli import main; sys.exit(main())"


def one_clean_line(err: str) -> str:
    """The error output is one line starting with 'error:', with no traceback; returns it."""
    assert "Traceback" not in err and "File \"" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def subprocess_cli(*argv: str, prefix: list[str] | tuple = (), env: dict | None = None, timeout: float = 120):
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC,
                "MMSEC_QUIET": "1", **(env or {})}
    return subprocess.run([*prefix, sys.executable, "-c", MAIN, *argv], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def unprivileged() -> list[str] | None:
    """A command prefix under which file permissions apply (root ignores them): nothing for a normal user;
    for root, setpriv without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH. None when that is not possible."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None
