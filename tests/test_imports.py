"""Every module imports on its own, first, in a fresh interpreter: no hidden import-order cycles."""

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, sys
import mmsec
names = sorted(m.name for m in pkgutil.walk_packages(mmsec.__path__, "mmsec."))
failed = []
for name in names:
    for loaded in [k for k in sys.modules if k == "mmsec" or k.startswith("mmsec.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as e:
        failed.append(f"{name}: {e}")
print(len(names))
print("\\n".join(failed))
"""


def test_each_module_imports_first():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=True)
    count, *failed = out.stdout.strip().splitlines()
    assert int(count) > 50  # the walk found the package's modules
    assert not failed, "modules that fail when imported first (an import cycle):\n" + "\n".join(failed)
