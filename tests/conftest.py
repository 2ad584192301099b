"""Test configuration: no network, strict numerics, shared fixtures."""

import socket

import jax
import numpy as np
import pytest

# Reference computations in the tests are float64; the library itself runs in float32.
jax.config.update("jax_enable_x64", False)


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
