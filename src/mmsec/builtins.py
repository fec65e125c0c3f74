"""Load mmsec's built-in registrations: every method, model loader, data set and task.

The registry is a leaf that imports nothing; importing a method's package runs its ``@register``
decorators. The CLI and the runner call :func:`load` before they look anything up by name; a
library user who imports a class directly needs neither.
"""

from __future__ import annotations

import importlib

# Packages whose import registers the built-ins, bottom layer first.
PACKAGES = ("mmsec.data", "mmsec.models", "mmsec.zoo.loader", "mmsec.attacks", "mmsec.defenses", "mmsec.merging",
            "mmsec.runs.tasks")

_loaded = False


def load() -> None:
    """Import every package that registers built-ins (once per process)."""
    global _loaded
    if _loaded:
        return
    for name in PACKAGES:
        importlib.import_module(name)
    _loaded = True


__all__ = ["PACKAGES", "load"]
