"""Independent NumPy float64 references for the cell and engine tests, and the cell zoo.

Every equation here is written out from the papers / module docstrings, without calling any
jaxrnn step: the tests compare jaxrnn (float32) against these (float64). Parameters are read by
name from the cells' NamedTuples, and only the documented layouts are assumed (fused gate order
(i, f, g, o) for LSTM, (r, z, n) for GRU, ``x @ W`` with ``W: (in, k*H)``).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn
from jaxrnn.cells import registry

F = 3  # input features used throughout the tests

# The tests compile many small programs and XLA's CPU compile time dominates their run time;
# the heavy ones compile at optimisation level 0 (about 40% faster to compile, same maths). The
# plain ``jax.jit`` path is exercised by the jit variants of the key tests.
jit_o0 = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

# name -> cell; small sizes keep compile times short. Every registered cell that runs on feature
# sequences (jaxrnn.cells.registry, at its test size), plus the published variants that are
# options of a registered factory. A cell added to the registry is tested here once its NumPy
# step is in REF_STEPS below.
CELLS = {name: registry.REGISTRY[name].make_for_tests()
         for name in registry.names(inputs="features")}
CELLS.update({
    "elman_readout": jaxrnn.elman(5, output_size=3, output_activation="sigmoid"),
    "lstm_peephole": jaxrnn.lstm(4, peephole=True),
})
CELL_NAMES = list(CELLS)


# --------------------------------------------------------------------------- random pytrees

def random_params(cell, seed: int = 0, input_size: int = F, scale: float = 0.5):
    """The cell's parameter structure (from ``init``) filled with N(0, scale^2) float64 values,
    so every term of the equations (biases, peepholes, b_h) is exercised with non-zero values."""
    template = cell.init(jax.random.key(seed), input_size)
    rng = np.random.default_rng(seed + 1000)
    return jax.tree_util.tree_map(lambda a: scale * rng.standard_normal(a.shape), template)


def random_carry(cell, params, batch_shape, seed: int = 0, scale: float = 0.5):
    """A random float64 carry of the right structure for ``batch_shape``."""
    template = jax.eval_shape(lambda p: cell.initial_carry(p, batch_shape), to_jax(params))
    rng = np.random.default_rng(seed + 2000)
    return jax.tree_util.tree_map(lambda a: scale * rng.standard_normal(a.shape), template)


def to_jax(tree, dtype=jnp.float32):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


def to_np(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


# --------------------------------------------------------------------------- NumPy equations

def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _elman(P, carry, x, out_act=None):
    # h_t = tanh(x W_h + h U_h + b);  y_t = sigma_y(h W_y + b_y) or h_t
    h = np.tanh(x @ P.w_x + carry.h @ P.w_h + P.b)
    y = h if P.w_y is None else out_act(h @ P.w_y + P.b_y)
    return {"h": h}, y


def _jordan(P, carry, x):
    # h_t = tanh(x W_h + y_{t-1} U_h + b_h);  y_t = tanh(h_t W_y + b_y)
    h = np.tanh(x @ P.w_x + carry.y @ P.w_y_h + P.b)
    y = np.tanh(h @ P.w_y + P.b_y)
    return {"y": y}, y


def _lstm(P, carry, x):
    H = carry.h.shape[-1]
    z = x @ P.w_x + carry.h @ P.w_h + P.b
    zi, zf, zg, zo = (z[..., k * H : (k + 1) * H] for k in range(4))
    c_prev = carry.c
    if P.peephole is not None:  # Gers & Schmidhuber 2000: i, f see c_{t-1}; o sees c_t
        zi = zi + P.peephole[0] * c_prev
        zf = zf + P.peephole[1] * c_prev
    i, f, g = sigmoid(zi), sigmoid(zf), np.tanh(zg)
    c = f * c_prev + i * g
    if P.peephole is not None:
        zo = zo + P.peephole[2] * c
    h = sigmoid(zo) * np.tanh(c)
    return {"h": h, "c": c}, h


def _gru_reset_after(P, carry, x):
    H = carry.h.shape[-1]
    blk = lambda a, k: a[..., k * H : (k + 1) * H]
    h_prev = carry.h
    # r and z as in Cho et al.; the candidate resets the *recurrent product* (cuDNN form).
    r = sigmoid(x @ blk(P.w_x, 0) + blk(P.b, 0) + h_prev @ blk(P.w_h, 0) + blk(P.b_h, 0))
    z = sigmoid(x @ blk(P.w_x, 1) + blk(P.b, 1) + h_prev @ blk(P.w_h, 1) + blk(P.b_h, 1))
    n = np.tanh(x @ blk(P.w_x, 2) + blk(P.b, 2) + r * (h_prev @ blk(P.w_h, 2) + blk(P.b_h, 2)))
    h = (1.0 - z) * n + z * h_prev
    return {"h": h}, h


def _gru_cho(P, carry, x):
    H = carry.h.shape[-1]
    blk = lambda a, k: a[..., k * H : (k + 1) * H]
    h_prev = carry.h
    r = sigmoid(x @ blk(P.w_x, 0) + blk(P.b, 0) + h_prev @ blk(P.w_h, 0))
    z = sigmoid(x @ blk(P.w_x, 1) + blk(P.b, 1) + h_prev @ blk(P.w_h, 1))
    # Cho et al. 2014: the reset gate scales h_{t-1} *before* the recurrent product.
    n = np.tanh(x @ blk(P.w_x, 2) + blk(P.b, 2) + (r * h_prev) @ blk(P.w_h, 2))
    h = (1.0 - z) * n + z * h_prev
    return {"h": h}, h


def _fully_recurrent(P, carry, x, n_out):
    # Williams & Zipser 1989: one weight matrix over the state [x_t ; u_{t-1}] (inputs clamped).
    W = np.concatenate([P.w_x, P.w_h], axis=0)
    s = np.concatenate([x, carry.h], axis=-1)
    u = np.tanh(s @ W + P.b)
    return {"h": u}, u[..., :n_out]


def min_g(v):
    """minGRU/minLSTM's positive candidate activation g."""
    return np.where(v >= 0, v + 0.5, sigmoid(v))


def _min_gru(P, carry, x):
    # Feng et al. 2024: z = sigma(x W_z + b_z);  h_t = (1 - z) h_{t-1} + z g(x W_h + b_h)
    H = carry.h.shape[-1]
    k = x @ P.w_x + P.b
    z = sigmoid(k[..., :H])
    h = (1.0 - z) * carry.h + z * min_g(k[..., H:])
    return {"h": h}, h


def _min_lstm(P, carry, x):
    # Feng et al. 2024, normalised gates: h_t = f/(f+i) h_{t-1} + i/(f+i) g(x W_h + b_h)
    H = carry.h.shape[-1]
    k = x @ P.w_x + P.b
    f, i = sigmoid(k[..., :H]), sigmoid(k[..., H : 2 * H])
    h = f / (f + i) * carry.h + i / (f + i) * min_g(k[..., 2 * H :])
    return {"h": h}, h


def _reservoir(P, carry, x, leak):
    # Jaeger 2001, leaky: x_t = (1 - a) x_{t-1} + a tanh(u_t W_in + x_{t-1} W + b)
    h = (1.0 - leak) * carry.h + leak * np.tanh(x @ P.w_in + carry.h @ P.w + P.b)
    return {"h": h}, h


def _mgu(P, carry, x):
    # Zhou et al. 2016: f = sigma(x W_f + h U_f + b_f); h~ = tanh(x W_h + (f h) U_h + b_h);
    # h_t = (1 - f) h_{t-1} + f h~
    H = carry.h.shape[-1]
    blk = lambda a, k: a[..., k * H : (k + 1) * H]
    f = sigmoid(x @ blk(P.w_x, 0) + carry.h @ blk(P.w_h, 0) + blk(P.b, 0))
    h_tilde = np.tanh(x @ blk(P.w_x, 1) + (f * carry.h) @ blk(P.w_h, 1) + blk(P.b, 1))
    h = (1.0 - f) * carry.h + f * h_tilde
    return {"h": h}, h


REF_STEPS = {
    "elman": _elman,
    "elman_readout": lambda P, c, x: _elman(P, c, x, out_act=sigmoid),
    "jordan": _jordan,
    "lstm": _lstm,
    "lstm_peephole": _lstm,
    "gru": _gru_reset_after,
    "gru_cho": _gru_cho,
    "fully_recurrent": lambda P, c, x: _fully_recurrent(
        P, c, x, n_out=registry.REGISTRY["fully_recurrent"].test_kwargs["output_size"]),
    "mgu": _mgu,
    "min_gru": _min_gru,
    "min_lstm": _min_lstm,
    "reservoir": lambda P, c, x: _reservoir(
        P, c, x, leak=registry.REGISTRY["reservoir"].test_kwargs["leak_rate"]),
}


def minimal_ref_run(name, params, xs, h0, lengths=None):
    """Feng et al. 2024, Algorithms for minGRU / minLSTM (sequential, linear space), float64.
    ``xs (B, T, F)``; returns ``(h_final, ys)``."""
    w = np.asarray(params.w_x, np.float64)
    b = np.asarray(params.b, np.float64)
    xs = np.asarray(xs, np.float64)
    B, T, _ = xs.shape
    H = h0.shape[-1]
    h = np.asarray(h0, np.float64).copy()
    ys = np.zeros((B, T, H))
    for t in range(T):
        k = xs[:, t] @ w + b
        if name == "min_gru":
            z = sigmoid(k[:, :H])
            new = (1 - z) * h + z * min_g(k[:, H:])
        else:
            f, i = sigmoid(k[:, :H]), sigmoid(k[:, H : 2 * H])
            new = f / (f + i) * h + i / (f + i) * min_g(k[:, 2 * H :])
        valid = np.ones(B, bool) if lengths is None else t < np.asarray(lengths)
        h = np.where(valid[:, None], new, h)
        ys[:, t] = np.where(valid[:, None], new, 0.0)
    return h, ys


def ref_step(name, params, carry, x):
    """One step of cell ``name`` in NumPy float64; returns ``(carry, y)`` with the carry as the
    same NamedTuple type as ``carry``."""
    new, y = REF_STEPS[name](to_np(params), to_np(carry), np.asarray(x, np.float64))
    return type(carry)(**new), y


def ref_run(name, params, xs, carry, lengths=None, reverse=False):
    """The engine's contract, per sequence, in NumPy: ``xs (B..., T, F)``, ``carry`` with leaves
    ``(B..., *)``; each sequence runs over its own ``lengths[b]`` steps (backwards with
    ``reverse``), the final carry is the one after its last valid step, outputs past it are 0."""
    xs = np.asarray(xs, np.float64)
    batch_shape, T = xs.shape[:-2], xs.shape[-2]
    lengths = np.full(batch_shape, T) if lengths is None else np.asarray(lengths)
    carry = to_np(carry)
    finals, ys = [], []
    for idx in np.ndindex(*batch_shape):
        c = jax.tree_util.tree_map(lambda a, idx=idx: a[idx], carry)
        L = int(lengths[idx])
        order = range(L - 1, -1, -1) if reverse else range(L)
        y_seq = {}
        for t in order:
            c, y_seq[t] = ref_step(name, params, c, xs[idx][t])
        O = CELLS[name].output_size
        ys.append(np.array([y_seq.get(t, np.zeros(O)) for t in range(T)]).reshape(T, O))
        finals.append(c)
    final = jax.tree_util.tree_map(
        lambda *a: np.stack(a).reshape(*batch_shape, *a[0].shape), *finals
    )
    return final, np.stack(ys).reshape(*batch_shape, T, CELLS[name].output_size)


def assert_trees_close(a, b, atol=2e-5, rtol=2e-5):
    """Same structure, same leaf shapes, values within tolerance (float32 against float64)."""
    chex.assert_trees_all_equal_shapes(a, b)
    chex.assert_trees_all_close(a, b, atol=atol, rtol=rtol)
