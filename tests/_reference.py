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
import pytest

from jaxrnn.cells import registry

F = 3  # input features used throughout the tests

# The tests compile many small programs and XLA's CPU compile time dominates their run time;
# the heavy ones compile at optimisation level 0 (about 40% faster to compile, same maths). The
# plain ``jax.jit`` path is exercised by the jit variants of the key tests.
jit_o0 = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

# name -> cell; small sizes keep compile times short. Every registered cell that runs on feature
# sequences and every test variant of one (jaxrnn.cells.registry: ``lstm_peephole`` is the
# ``lstm`` entry with its variant's options), at its test size. A cell added to the registry is
# tested here once its NumPy step ``ref_<name>`` is written below.
CELLS = {name: registry.make_variant(name) for name in registry.variants()}
CELL_NAMES = list(CELLS)


def slow_beyond(names, default):
    """``names`` as pytest parameters, those outside ``default`` marked ``slow``: per-cell
    checks of cell-agnostic engine code run on a few unlike cells (carries ``(h, c)``, ``y``,
    no StepParts) by default and on every cell in the full suite."""
    missing = set(default) - set(names)
    assert not missing, missing
    return [pytest.param(n, marks=() if n in default else pytest.mark.slow) for n in names]


# --------------------------------------------------------------------------- random pytrees

def random_params(cell, seed: int = 0, input_size: int = F, scale: float = 0.5):
    """The cell's parameter structure (from ``init``) filled with N(0, scale^2) float64 values,
    so every term of the equations (biases, peepholes, b_h) is exercised with non-zero values."""
    template = jax.eval_shape(lambda k: cell.init(k, input_size), jax.random.key(seed))
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


# NumPy activations by the names the factories take
ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": sigmoid,
    "relu": lambda v: np.maximum(v, 0.0),
    "identity": lambda v: v,
    "hard_sigmoid": lambda v: np.clip(v / 6.0 + 0.5, 0.0, 1.0),  # relu6(v + 3) / 6
}


def _act(a):
    return a if callable(a) else ACTIVATIONS[a]


# Each ``ref_<entry>(P, carry, x, **kwargs)`` is one step of that registered cell, where
# ``kwargs`` are the keyword arguments the cell was built with (options the step depends on).

def ref_elman(P, carry, x, activation="tanh", output_activation="identity", **_):
    # h_t = sigma_h(x W_h + h U_h + b);  y_t = sigma_y(h W_y + b_y) or h_t
    h = _act(activation)(x @ P.w_x + carry.h @ P.w_h + P.b)
    y = h if P.w_y is None else _act(output_activation)(h @ P.w_y + P.b_y)
    return {"h": h}, y


def ref_jordan(P, carry, x, activation="tanh", output_activation="tanh", **_):
    # h_t = sigma_h(x W_h + y_{t-1} U_h + b_h);  y_t = sigma_y(h_t W_y + b_y)
    h = _act(activation)(x @ P.w_x + carry.y @ P.w_y_h + P.b)
    y = _act(output_activation)(h @ P.w_y + P.b_y)
    return {"y": y}, y


def ref_lstm(P, carry, x, activation="tanh", recurrent_activation="sigmoid", **_):
    H = carry.h.shape[-1]
    act, gate = _act(activation), _act(recurrent_activation)
    z = x @ P.w_x + carry.h @ P.w_h + P.b
    zi, zf, zg, zo = (z[..., k * H : (k + 1) * H] for k in range(4))
    c_prev = carry.c
    if P.peephole is not None:  # Gers & Schmidhuber 2000: i, f see c_{t-1}; o sees c_t
        zi = zi + P.peephole[0] * c_prev
        zf = zf + P.peephole[1] * c_prev
    i, f, g = gate(zi), gate(zf), act(zg)
    c = f * c_prev + i * g
    if P.peephole is not None:
        zo = zo + P.peephole[2] * c
    h = gate(zo) * act(c)
    return {"h": h, "c": c}, h


def ref_gru(P, carry, x, **_):
    H = carry.h.shape[-1]
    blk = lambda a, k: a[..., k * H : (k + 1) * H]
    h_prev = carry.h
    # r and z as in Cho et al.; the candidate resets the *recurrent product* (cuDNN form).
    r = sigmoid(x @ blk(P.w_x, 0) + blk(P.b, 0) + h_prev @ blk(P.w_h, 0) + blk(P.b_h, 0))
    z = sigmoid(x @ blk(P.w_x, 1) + blk(P.b, 1) + h_prev @ blk(P.w_h, 1) + blk(P.b_h, 1))
    n = np.tanh(x @ blk(P.w_x, 2) + blk(P.b, 2) + r * (h_prev @ blk(P.w_h, 2) + blk(P.b_h, 2)))
    h = (1.0 - z) * n + z * h_prev
    return {"h": h}, h


def ref_gru_cho(P, carry, x, **_):
    H = carry.h.shape[-1]
    blk = lambda a, k: a[..., k * H : (k + 1) * H]
    h_prev = carry.h
    r = sigmoid(x @ blk(P.w_x, 0) + blk(P.b, 0) + h_prev @ blk(P.w_h, 0))
    z = sigmoid(x @ blk(P.w_x, 1) + blk(P.b, 1) + h_prev @ blk(P.w_h, 1))
    # Cho et al. 2014: the reset gate scales h_{t-1} *before* the recurrent product.
    n = np.tanh(x @ blk(P.w_x, 2) + blk(P.b, 2) + (r * h_prev) @ blk(P.w_h, 2))
    h = (1.0 - z) * n + z * h_prev
    return {"h": h}, h


def ref_fully_recurrent(P, carry, x, output_size, **_):
    # Williams & Zipser 1989: one weight matrix over the state [x_t ; u_{t-1}] (inputs clamped).
    W = np.concatenate([P.w_x, P.w_h], axis=0)
    s = np.concatenate([x, carry.h], axis=-1)
    u = np.tanh(s @ W + P.b)
    return {"h": u}, u[..., :output_size]


def min_g(v):
    """minGRU/minLSTM's positive candidate activation g."""
    return np.where(v >= 0, v + 0.5, sigmoid(v))


def ref_min_gru(P, carry, x, **_):
    # Feng et al. 2024: z = sigma(x W_z + b_z);  h_t = (1 - z) h_{t-1} + z g(x W_h + b_h)
    H = carry.h.shape[-1]
    k = x @ P.w_x + P.b
    z = sigmoid(k[..., :H])
    h = (1.0 - z) * carry.h + z * min_g(k[..., H:])
    return {"h": h}, h


def ref_min_lstm(P, carry, x, **_):
    # Feng et al. 2024, normalised gates: h_t = f/(f+i) h_{t-1} + i/(f+i) g(x W_h + b_h)
    H = carry.h.shape[-1]
    k = x @ P.w_x + P.b
    f, i = sigmoid(k[..., :H]), sigmoid(k[..., H : 2 * H])
    h = f / (f + i) * carry.h + i / (f + i) * min_g(k[..., 2 * H :])
    return {"h": h}, h


def ref_reservoir(P, carry, x, leak_rate=1.0, **_):
    # Jaeger 2001, leaky: x_t = (1 - a) x_{t-1} + a tanh(u_t W_in + x_{t-1} W + b)
    h = (1.0 - leak_rate) * carry.h + leak_rate * np.tanh(x @ P.w_in + carry.h @ P.w + P.b)
    return {"h": h}, h


def ref_mgu(P, carry, x, **_):
    # Zhou et al. 2016: f = sigma(x W_f + h U_f + b_f); h~ = tanh(x W_h + (f h) U_h + b_h);
    # h_t = (1 - f) h_{t-1} + f h~
    H = carry.h.shape[-1]
    blk = lambda a, k: a[..., k * H : (k + 1) * H]
    f = sigmoid(x @ blk(P.w_x, 0) + carry.h @ blk(P.w_h, 0) + blk(P.b, 0))
    h_tilde = np.tanh(x @ blk(P.w_x, 1) + (f * carry.h) @ blk(P.w_h, 1) + blk(P.b, 1))
    h = (1.0 - f) * carry.h + f * h_tilde
    return {"h": h}, h


def _construction(name):
    """(entry name, keyword arguments) cell ``name`` of :data:`CELLS` was built with."""
    entry, variant = registry.variants()[name]
    return entry.name, {**entry.options, **entry.test_kwargs,
                        **({} if variant is None else variant.options)}


def reference_step(entry_name, **kwargs):
    """The NumPy step of registered cell ``entry_name`` built with ``kwargs``, or None."""
    ref = globals().get(f"ref_{entry_name}")
    return None if ref is None else functools.partial(ref, **kwargs)


def _ref_steps():
    out = {}
    for name in CELLS:
        entry_name, kwargs = _construction(name)
        step = reference_step(entry_name, **kwargs)
        if step is not None:
            out[name] = step
    return out


# name -> NumPy step, for every cell of CELLS whose reference is written
REF_STEPS = _ref_steps()


def _step_of(cell):
    return REF_STEPS[cell] if isinstance(cell, str) else cell


def ref_step(cell, params, carry, x):
    """One step in NumPy float64 of ``cell``: a name of :data:`CELLS` or a step from
    :func:`reference_step`; returns ``(carry, y)`` with the carry as the same NamedTuple type
    as ``carry``."""
    new, y = _step_of(cell)(to_np(params), to_np(carry), np.asarray(x, np.float64))
    return type(carry)(**new), y


def ref_run(cell, params, xs, carry, lengths=None, reverse=False):
    """The engine's contract, per sequence, in NumPy: ``xs (B..., T, F)``, ``carry`` with leaves
    ``(B..., *)``; each sequence runs over its own ``lengths[b]`` steps (backwards with
    ``reverse``), the final carry is the one after its last valid step, outputs past it are 0.
    ``cell`` as in :func:`ref_step`."""
    xs = np.asarray(xs, np.float64)
    batch_shape, T = xs.shape[:-2], xs.shape[-2]
    lengths = np.full(batch_shape, T) if lengths is None else np.asarray(lengths)
    carry = to_np(carry)
    first = jax.tree_util.tree_map(lambda a: a[(0,) * len(batch_shape)], carry)
    O = np.shape(ref_step(cell, params, first, np.zeros(xs.shape[-1]))[1])[-1]
    finals, ys = [], []
    for idx in np.ndindex(*batch_shape):
        c = jax.tree_util.tree_map(lambda a, idx=idx: a[idx], carry)
        L = int(lengths[idx])
        order = range(L - 1, -1, -1) if reverse else range(L)
        y_seq = {}
        for t in order:
            c, y_seq[t] = ref_step(cell, params, c, xs[idx][t])
        ys.append(np.array([y_seq.get(t, np.zeros(O)) for t in range(T)]).reshape(T, O))
        finals.append(c)
    final = jax.tree_util.tree_map(
        lambda *a: np.stack(a).reshape(*batch_shape, *a[0].shape), *finals
    )
    return final, np.stack(ys).reshape(*batch_shape, T, O)


def minimal_ref_run(name, params, xs, h0, lengths=None):
    """:func:`ref_run` of ``min_gru`` / ``min_lstm`` (any size) from the state ``h0``, as
    ``(h_final, ys)``."""
    state = registry.get(name).state_type(np.asarray(h0, np.float64))
    final, ys = ref_run(reference_step(name), params, xs, state, lengths)
    return final.h, ys


def assert_trees_close(a, b, atol=2e-5, rtol=2e-5):
    """Same structure, same leaf shapes, values within tolerance (float32 against float64)."""
    chex.assert_trees_all_equal_shapes(a, b)
    chex.assert_trees_all_close(a, b, atol=atol, rtol=rtol)
