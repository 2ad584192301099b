"""Kernel results do not depend on the CPUs the process may use (issue 27).

A process confined to one CPU (``taskset -c 0``, a cpuset) gets a one-thread XLA pool and
one-thread kernel teams; the default process gets a team per call. Every value of a kernel
cell, forward and gradients, must be the same bit for bit: the kernels sum every output in one
order whatever the team, and the products and sums around them that XLA would split by its
pool size (the input gradient, the bias gradients, minGRU/minLSTM's projection) are the
kernels' own.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxrnn import kernels

pytestmark = [
    pytest.mark.skipif(kernels._compiler() is None, reason="no C++ compiler"),
    pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity"),
    pytest.mark.skipif(hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) < 2,
                       reason="the process may use one CPU only: nothing to compare"),
]

# Computes every case's forward values and gradients (params, inputs, initial carry) and saves
# them to argv[2]; argv[1] == "one" confines the process to one CPU first (before JAX starts
# its threads). Sizes: GRU H 192, B 16 is issue 27's case; then every registered kernel cell at
# H 160 (an output of 48 where it has its own) with B 12 and 32, which reach both thread splits
# (units and rows) of each kernel, over sums long enough for XLA to split them.
_CASES = r"""
import jax, jax.numpy as jnp, numpy as np
import jaxrnn
from jaxrnn.cells import registry
CASES = {"gru": (jaxrnn.gru(192), 16, 12, 32)}  # name: (cell, B, T, F)
for _name in registry.names(kernel=True):
    for _B in (12, 32):
        CASES[f"{_name}-B{_B}"] = (registry.make_variant(_name, hidden=160, output=48), _B, 24, 32)

def values(names):
    out = {}
    for name in names:
        cell, B, T, F = CASES[name]
        # The parameters' values come from NumPy, the init gives their shapes only: the
        # orthogonal initialiser's QR (LAPACK through XLA) itself differs in its last bits
        # between a one-CPU and a two-CPU process on some CPUs (AMD family 26 model 2), and
        # what is compared here is the kernels' arithmetic on the same inputs.
        rng = np.random.default_rng(3)
        p = jax.tree_util.tree_map(
            lambda a: jnp.asarray(rng.uniform(-0.3, 0.3, a.shape), a.dtype)
            if jnp.issubdtype(a.dtype, jnp.floating) else a, cell.init(jax.random.key(0), F))
        xs = jax.random.normal(jax.random.key(1), (B, T, F))
        c0 = jax.tree_util.tree_map(lambda a: 0.3 + 0.0 * a, cell.initial_carry(p, (B,)))
        lengths = jnp.asarray(np.random.default_rng(2).integers(T // 2, T + 1, size=B))

        def loss(p, xs, c0, cell=cell, lengths=lengths):
            final, ys = jaxrnn.run(cell, p, xs, carry=c0, lengths=lengths, impl="kernel")
            leaves = jax.tree_util.tree_leaves(final)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(f * f) for f in leaves), ys

        (_, ys), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
            p, xs, c0)
        out[name + "/ys"] = np.asarray(ys)
        for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
            out[name + "/d" + jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out
"""

# Confines the process to one CPU before JAX starts its threads, then saves values(argv[2]).
_ONE_CPU = r"""
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
exec(sys.argv[1])
np.savez(sys.argv[3], **values(sys.argv[2].split(",")))
print("affinity", sorted(os.sched_getaffinity(0)))
"""


def _on_one_cpu(path, cases):
    env = {k: v for k, v in os.environ.items() if k != "JAXRNN_KERNEL_THREADS"}
    env["JAX_PLATFORMS"] = "cpu"
    run = subprocess.run([sys.executable, "-c", _ONE_CPU, _CASES, ",".join(cases), str(path)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == f"affinity [{min(os.sched_getaffinity(0))}]"
    return dict(np.load(path))


def _here(cases, monkeypatch):
    monkeypatch.delenv("JAXRNN_KERNEL_THREADS", raising=False)  # the team the kernels choose
    scope: dict = {}
    exec(_CASES, scope)
    return scope["values"](cases)


def _assert_same_on_one_cpu_and_on_all(tmp_path, monkeypatch, cases):
    one = _on_one_cpu(tmp_path / "one.npz", cases)
    every = _here(cases, monkeypatch)
    assert sorted(one) == sorted(every) and len(one) > 4 * len(cases)
    differ = [f"{k}: max |diff| {np.abs(one[k] - every[k]).max():.3g}" for k in sorted(one)
              if not np.array_equal(one[k], every[k], equal_nan=True)]
    assert not differ, "differ between one CPU and all:\n" + "\n".join(differ)


def test_gru_gradient_is_the_same_on_one_cpu_and_on_all(tmp_path, monkeypatch):
    # Issue 27's case: GRU H 192, B 16, whose bias gradients were XLA's sums.
    _assert_same_on_one_cpu_and_on_all(tmp_path, monkeypatch, ["gru"])


@pytest.mark.slow
def test_every_kernel_value_is_the_same_on_one_cpu_and_on_all(tmp_path, monkeypatch):
    scope: dict = {}
    exec(_CASES, scope)
    _assert_same_on_one_cpu_and_on_all(tmp_path, monkeypatch, list(scope["CASES"]))
