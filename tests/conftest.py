"""Test configuration: no network, strict numerics, warnings as errors, shared fixtures."""

import socket

import jax
import numpy as np
import pytest

# Reference computations in the tests are float64; the library itself runs in float32.
jax.config.update("jax_enable_x64", False)
# Strict dtype promotion (no implicit float32 + bfloat16, int + float: casts written out), as
# Equinox's tests do, for the modules of the numerical core. Not suite-wide: optax's Adam
# computes its bias correction as ``b1 ** count`` (a Python float with an int32 count), which
# has no strict promotion path, so every test that trains through optax (and test modules
# other branches add) keeps JAX's standard promotion; so does the torch importer's, whose
# float64 modules meet float32 defaults.
STRICT_DTYPE_MODULES = {
    "test_cells", "test_scan", "test_layers", "test_models", "test_registry", "test_fast_path",
    "test_mixed_precision", "test_minimal_cells", "test_errors", "test_parallel",
}


@pytest.fixture(autouse=True)
def _strict_dtype_promotion(request):
    if request.module.__name__.rpartition(".")[2] in STRICT_DTYPE_MODULES:
        with jax.numpy_dtype_promotion("strict"):
            yield
    else:
        yield


# Rank promotion cannot be strict here: every cell treats all leading dimensions as batch and
# adds its biases by broadcasting ``(B..., G) + (G,)`` (as Flax does), so
# ``jax_numpy_rank_promotion="raise"`` would reject the library's own convention.


def pytest_configure(config):
    # A warning is a failure unless a test expects it (pytest.warns) or it is filtered below.
    config.addinivalue_line("filterwarnings", "error")
    config.addinivalue_line("markers",
                            "slow: over 4 s on the 2-core machine (tests/slow_tests.txt)")


# The tests that took over 4 s each on the machine class's 2-core AMD EPYC (AVX2), measured
# with pytest-reportlog over the whole suite (2026-12-02): there the suite took ~19 minutes,
# past CI's 15. They are marked `slow`: the README's test command (`-m "not slow"`, what CI
# runs) leaves them out, `python3 -m pytest -n 2 -m slow` runs them. Each behaviour they check
# keeps a faster test in the default run where one exists (e.g. one two-process run).
_SLOW_LIST = __import__("pathlib").Path(__file__).with_name("slow_tests.txt")


def pytest_collection_modifyitems(config, items):
    slow = {line.strip() for line in _SLOW_LIST.read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    for item in items:
        if item.nodeid in slow:
            item.add_marker(pytest.mark.slow)


class _NetworkBlocked(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _block_network(monkeypatch):
    """Any attempt to open an internet connection fails loudly (datasets must ship in packages)."""

    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")):
            return real_connect(self, address)
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        raise _NetworkBlocked(f"network access blocked in tests: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
