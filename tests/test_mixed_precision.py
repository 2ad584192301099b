"""Mixed precision: with ``compute_dtype=jnp.bfloat16`` every cell computes its products in
bfloat16 with float32 accumulation, keeps float32 parameters and carries, and stays close to the
float32 result.

Stated tolerance (T = 24 steps, hidden 16, inputs N(0, 1), weights N(0, 1/fan_in), biases and
peepholes N(0, 0.3^2)): outputs and final carries within 2.5e-2 * max(1, max|float32 value|)
absolute; parameter gradients (checked on three representative cells) within 2.5e-2 relative L2
error per parameter array. bfloat16 keeps 8 significant bits (relative rounding 2^-9 ~ 2e-3 per
operand). Measured on this machine: output errors 0.003-0.010 (scaled), gradient errors
0.003-0.005."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn.cells import registry

H, F, B, T = 16, 5, 4, 24
OUT_TOL, GRAD_TOL = 2.5e-2, 2.5e-2

def _case(entry):
    """Each registered cell at width H (its first variant where it has one: the variant's extra
    products, peepholes or a readout, are computed in bfloat16 too), ``dtype -> cell``."""
    name = next(iter(entry.variants), entry.name)
    size = next(iter(entry.test_kwargs))
    width = {size: 4 if entry.inputs == "frames" else H}
    return lambda d: registry.make_variant(name, compute_dtype=d, **width)


CELLS = {next(iter(e.variants), e.name): _case(e) for e in registry.REGISTRY.values()}


def _inputs(name):
    rng = np.random.default_rng(1)  # NumPy: no per-shape XLA compilation in the test set-up
    if name in registry.names(inputs="frames"):  # batch-major frames: (B, height, width, T, C)
        return jnp.asarray(rng.normal(size=(2, 5, 5, 6, 2)), jnp.float32), None, 2
    lengths = jnp.array([T, T - 5, 3, 1])
    return jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32), lengths, F


def _params(cell, input_size):
    """Random parameters of the cell's structure: N(0, 1/fan_in) weights (fan_in = product of
    all but the last axis), N(0, 0.3^2) biases and peepholes, so every parameter takes part."""
    shapes = jax.eval_shape(lambda k: cell.init(k, input_size), jax.random.key(0))
    rng = np.random.default_rng(0)

    def draw(s):
        scale = 1.0 / np.sqrt(np.prod(s.shape[:-1])) if len(s.shape) >= 2 else 0.3
        return jnp.asarray(scale * rng.normal(size=s.shape), s.dtype)

    return jax.tree_util.tree_map(draw, shapes)


def _close(low, ref, tol):
    scale = max(1.0, float(jnp.max(jnp.abs(ref))))
    err = float(jnp.max(jnp.abs(low - ref)))
    assert err <= tol * scale, f"max abs error {err} > {tol} * {scale}"
    return err


@pytest.mark.parametrize("name", sorted(CELLS))
def test_bfloat16_compute_close_to_float32(name):
    cell32, cell16 = CELLS[name](None), CELLS[name](jnp.bfloat16)
    xs, lengths, input_size = _inputs(name)
    params = _params(cell32, input_size)
    c32, y32 = jax.jit(lambda p: jaxrnn.run(cell32, p, xs, lengths=lengths))(params)
    c16, y16 = jax.jit(lambda p: jaxrnn.run(cell16, p, xs, lengths=lengths))(params)

    # parameters, carries and outputs stay float32
    for leaf in jax.tree_util.tree_leaves((params, c16, y16)):
        assert leaf.dtype == jnp.float32
    # bfloat16 is really used: the products take bf16 operands ...
    jaxpr = str(jax.make_jaxpr(lambda p: jaxrnn.run(cell16, p, xs, lengths=lengths))(params))
    assert "bf16" in jaxpr
    err = _close(y16, y32, OUT_TOL)
    assert err > 0  # ... and change the result
    for a, b in zip(jax.tree_util.tree_leaves(c16), jax.tree_util.tree_leaves(c32), strict=True):
        _close(a, b, OUT_TOL)


# Gradients on three representative cells (a gated cell with peepholes, a linear-in-h minimal
# cell, and the fully recurrent net, whose unconstrained recurrence amplifies rounding most).
@pytest.mark.parametrize("name", [pytest.param("lstm_peephole", marks=pytest.mark.slow),
                                  pytest.param("min_lstm", marks=pytest.mark.slow),
                                  "fully_recurrent"])
def test_bfloat16_gradients_close_to_float32(name):
    cell32, cell16 = CELLS[name](None), CELLS[name](jnp.bfloat16)
    xs, lengths, input_size = _inputs(name)
    params = _params(cell32, input_size)

    def grad(cell):
        return jax.jit(jax.grad(
            lambda p: jnp.sum(jaxrnn.run(cell, p, xs, lengths=lengths)[1] ** 2)))(params)

    g32, g16 = grad(cell32), grad(cell16)
    for a, b in zip(jax.tree_util.tree_leaves(g16), jax.tree_util.tree_leaves(g32), strict=True):
        assert a.dtype == jnp.float32
        rel = float(jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), 1e-12))
        assert rel <= GRAD_TOL, f"gradient relative error {rel}"


def test_float32_default_has_no_low_precision():
    cell = jaxrnn.lstm(H)
    params = _params(cell, F)
    xs, _, _ = _inputs("lstm")
    assert "bf16" not in str(jax.make_jaxpr(lambda p: jaxrnn.run(cell, p, xs))(params))
    explicit, default = jax.jit(lambda p: (
        jaxrnn.run(jaxrnn.lstm(H, compute_dtype=jnp.float32), p, xs)[1],
        jaxrnn.run(cell, p, xs)[1]))(params)
    np.testing.assert_array_equal(explicit, default)
