"""Every module imports first, on its own, in a fresh interpreter: an import cycle between two
modules shows only in the order where the wrong one comes first (``import minicnn.train`` once
failed this way while ``import minicnn`` worked)."""
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import minicnn

MODULES = [m.name for m in pkgutil.walk_packages(minicnn.__path__, "minicnn.")
           if m.name != "minicnn.__main__"]            # importing __main__ runs the CLI
# without CuPy, the GPU kernels refuse to import, on purpose
NEEDS_CUPY = "ImportError: minicnn.kernels._cupy needs CuPy"


def _import_error(module):
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          text=True, timeout=120)
    return None if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]


def test_every_module_imports_first_in_a_fresh_interpreter():
    with ThreadPoolExecutor(8) as pool:
        errors = dict(zip(MODULES, pool.map(_import_error, MODULES)))
    failed = {module: error for module, error in errors.items()
              if error and not (module == "minicnn.kernels._cupy" and error.startswith(NEEDS_CUPY))}
    assert len(MODULES) > 30 and not failed, failed
