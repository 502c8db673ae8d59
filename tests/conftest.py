"""Fixtures shared by the test files."""
import pytest

from minicnn import backend


@pytest.fixture
def threads():
    """set(n) sets the thread count of the kernels and the BLAS for one test; restored after."""
    previous = backend.get_num_threads()
    yield backend.set_num_threads
    backend.set_num_threads(previous)
