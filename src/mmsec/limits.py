"""Size limits checked before anything runs: a typo such as ``n: 1000000000`` fails at once, with the limit.

mmsec runs on a laptop CPU, so a spec (or a CLI option) asking for more than these is almost always
a mistake: it would claim a cell and then render, train or attack for hours, or run out of memory.
:func:`mmsec.runs.spec.load_spec`, ``mmsec quickstart --n`` and ``mmsec data export`` check them
and name the limit in their message. People who mean it set the environment variable
``MMSEC_NO_LIMITS=1`` (for one command: ``MMSEC_NO_LIMITS=1 mmsec run big.yaml``), and then none of
these is checked. The limits sit well above every shipped recipe's ``paper``
preset (the largest: 12,800 pre-training pairs, 300 steps, 50 epochs, 4,096 images, 108 cells).

A leaf module: it imports nothing from mmsec.
"""

from __future__ import annotations

import os
import re

NO_LIMITS_ENV = "MMSEC_NO_LIMITS"

MAX_IMAGES = 100_000  # images of one data block (data.n, a defense's data.n, quickstart --n, data export --n)
MAX_IMAGE_SIZE = 1024  # pixels per image side
MAX_STEPS = 100_000  # any *steps, iterations or queries parameter (attack, defense, training)
MAX_EPOCHS = 1_000  # any *epochs parameter
MAX_PAIRS = 1_000_000  # training pairs
MAX_RESTARTS = 1_000  # attack restarts
MAX_CELLS = 10_000  # cells of one grid
MAX_DATA_BYTES = 4 * 2**30  # estimated memory of one data block: float32 pixels plus the uint8 render

# Parameter names (anywhere in a spec's attack, defense and task fields) and their limits.
_PARAM_LIMITS: tuple[tuple[re.Pattern, int, str], ...] = (
    (re.compile(r"^(.*_)?steps$|^(max_)?iter(ation)?s?$|^(n_)?queries$|^n_queries$"), MAX_STEPS, "steps"),
    (re.compile(r"^(.*_)?epochs$"), MAX_EPOCHS, "epochs"),
    (re.compile(r"^(.*_)?pairs$"), MAX_PAIRS, "pairs"),
    (re.compile(r"^(n_)?restarts$"), MAX_RESTARTS, "restarts"),
)


def enforced() -> bool:
    """False when ``MMSEC_NO_LIMITS`` is set to 1 (or true / yes)."""
    return os.environ.get(NO_LIMITS_ENV, "").strip().lower() not in ("1", "true", "yes")


def over(field: str, value: int | float, limit: int | float, unit: str) -> str | None:
    """A one-line problem when ``value`` exceeds ``limit`` (and the limits are enforced), else None."""
    if not enforced() or value <= limit:
        return None
    return (f"{field}: {value:,} {unit} is above the limit of {limit:,} {unit} for one run on a CPU; "
            f"if you mean it, set {NO_LIMITS_ENV}=1")


def param_limit(name: str) -> tuple[int, str] | None:
    """(limit, unit) for a parameter named like a number of steps, epochs, pairs or restarts, else None."""
    for pattern, limit, unit in _PARAM_LIMITS:
        if pattern.match(name):
            return limit, unit
    return None


def data_bytes(n: int, image_size: int) -> int:
    """Estimated memory of ``n`` RGB images of side ``image_size``: float32 pixels plus the uint8 render."""
    return int(n) * 3 * int(image_size) ** 2 * (4 + 1)


def format_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:,.1f} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1024
    return f"{b:.1f} TiB"


def over_memory(field: str, n: int, image_size: int) -> str | None:
    """A problem when ``n`` images of ``image_size`` are estimated above :data:`MAX_DATA_BYTES`."""
    need = data_bytes(n, image_size)
    if not enforced() or need <= MAX_DATA_BYTES:
        return None
    return (f"{field}: {n:,} images of {image_size}x{image_size} need about {format_bytes(need)} in memory, above "
            f"the limit of {format_bytes(MAX_DATA_BYTES)}; use fewer or smaller images, or set {NO_LIMITS_ENV}=1")


__all__ = ["MAX_CELLS", "MAX_DATA_BYTES", "MAX_EPOCHS", "MAX_IMAGES", "MAX_IMAGE_SIZE", "MAX_PAIRS", "MAX_RESTARTS",
           "MAX_STEPS", "NO_LIMITS_ENV", "data_bytes", "enforced", "format_bytes", "over", "over_memory",
           "param_limit"]
