"""Fixtures shared by the test files."""
import os
import subprocess
import sys

import pytest

from minicnn import backend


@pytest.fixture
def threads():
    """set(n) sets the thread count of the kernels and the BLAS for one test; restored after."""
    previous = backend.get_num_threads()
    yield backend.set_num_threads
    backend.set_num_threads(previous)


@pytest.fixture
def python_with_env():
    """run(code, **env): what `python -c code` prints in a fresh interpreter, with env added to
    the environment (for settings read once, at import)."""
    def run(code, **env):
        return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env),
                              capture_output=True, text=True, check=True).stdout
    return run
