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
    config.addinivalue_line(
        "markers", "slow: over 4 s on the 2-core machine; left out of the default run "
                   "(-m 'not slow'), run by -m slow")
    config.addinivalue_line(
        "markers", "slow_when(predicate): marks `slow` the parametrisations for which "
                   "predicate(**params) is true (for combinations of stacked parametrize)")


# Slow tests are marked where they are defined: ``@pytest.mark.slow`` on a test, ``marks=`` on a
# ``pytest.param``, or ``@pytest.mark.slow_when(lambda name, padded, **_: ...)`` for some
# combinations of stacked parametrizations; never by test id (renaming a parametrisation must
# not move a test back into the default run). A slow test's behaviour keeps a faster test in the
# default run where one exists.
def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker("slow_when")
        callspec = getattr(item, "callspec", None)
        if marker is not None and callspec is not None and marker.args[0](**callspec.params):
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
