"""Each cell against its equations in NumPy float64, each cell's initialisation, and the
checks of every registered factory's arguments."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import (
    CELL_NAMES,
    CELLS,
    F,
    assert_trees_close,
    random_carry,
    random_params,
    ref_step,
    reference_step,
    sigmoid,
    to_jax,
)

import jaxrnn
from jaxrnn.cells import registry

JIT = pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])


def _maybe_jit(f, use_jit):
    return jax.jit(f) if use_jit else f


# --------------------------------------------------------------------------- one step

# jit for every cell; eagerly (every op compiled on its own: slow) for three unlike cells by
# default, every cell in -m slow
STEP_CASES = [pytest.param(n, True, id=f"{n}-jit") for n in CELL_NAMES] + [
    pytest.param(n, False, id=f"{n}-eager",
                 marks=() if n in ("lstm_peephole", "jordan", "gru_cho") else pytest.mark.slow)
    for n in CELL_NAMES]


@pytest.mark.parametrize("name, use_jit", STEP_CASES)
def test_step_matches_numpy_equations(name, use_jit):
    """One step from a random carry, random params (biases, peepholes included), for a batch,
    no batch and a 2-D batch shape (under jit all three in one program; eagerly, where every op
    compiles on its own, the batch only). The sequence-level NumPy comparison is in test_scan."""
    cell = CELLS[name]
    params = random_params(cell, seed=1)
    shapes = [(3,), (), (2, 3)] if use_jit else [(3,)]
    cases = {}
    for batch_shape in shapes:
        carry = random_carry(cell, params, batch_shape, seed=2)
        x = np.random.default_rng(3).standard_normal((*batch_shape, F))
        cases[batch_shape] = (carry, x)

    def steps(p, inputs):
        return [cell.step(p, c, cell.project(p, x)) for c, x in inputs]

    got = _maybe_jit(steps, use_jit)(
        to_jax(params), [(to_jax(c), jnp.asarray(x, jnp.float32)) for c, x in cases.values()]
    )
    for (batch_shape, (carry, x)), (got_carry, got_y) in zip(cases.items(), got, strict=True):
        want_carry, want_y = ref_step(name, params, carry, x)
        assert type(got_carry) is type(carry)
        assert got_y.shape == (*batch_shape, cell.output_size)
        assert got_y.dtype == jnp.float32
        assert_trees_close(got_carry, want_carry)
        np.testing.assert_allclose(got_y, want_y, atol=2e-5, rtol=2e-5)


def test_elman_configurable_activations():
    """sigma_h and sigma_y are configurable by name or as callables."""
    cell = jaxrnn.elman(4, output_size=2, activation="relu", output_activation=jnp.sin)
    ref = reference_step("elman", activation="relu", output_activation=np.sin)
    params = random_params(cell, seed=4)
    carry = random_carry(cell, params, (3,), seed=5)
    x = np.random.default_rng(6).standard_normal((3, F))
    got_c, got_y = cell.step(to_jax(params), to_jax(carry), cell.project(to_jax(params), x))
    want_c, want_y = ref_step(ref, params, carry, x)
    assert float(np.min(want_c.h)) == 0.0  # relu clipped some units
    np.testing.assert_allclose(got_c.h, want_c.h, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(got_y, want_y, atol=2e-5, rtol=2e-5)


def test_lstm_custom_gate_activations():
    cell = jaxrnn.lstm(3, activation="relu", recurrent_activation="hard_sigmoid")
    ref = reference_step("lstm", activation="relu", recurrent_activation="hard_sigmoid")
    params = random_params(cell, seed=7)
    carry = random_carry(cell, params, (2,), seed=8)
    x = np.random.default_rng(9).standard_normal((2, F))
    got, _ = cell.step(to_jax(params), to_jax(carry), cell.project(to_jax(params), x))
    want, _ = ref_step(ref, params, carry, x)
    np.testing.assert_allclose(got.c, want.c, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(got.h, want.h, atol=2e-5, rtol=2e-5)


# --------------------------------------------------------------------------- initialisation

def _glorot_bound(fan_in, fan_out):
    return np.sqrt(6.0 / (fan_in + fan_out))


def _assert_glorot_blocks(w, fan_in, width, blocks):
    """Each gate block is Glorot-uniform on its own (fan_in, width) fan: within the bound, and
    spread over it (a uniform sample's extremes approach the bound; its variance is bound^2/3)."""
    w = np.asarray(w)
    assert w.shape == (fan_in, blocks * width)
    bound = _glorot_bound(fan_in, width)
    for k in range(blocks):
        blk = w[:, k * width : (k + 1) * width]
        assert np.abs(blk).max() <= bound + 1e-6
        assert np.abs(blk).max() > 0.6 * bound


def _assert_orthogonal_blocks(w, rows, width, blocks):
    w = np.asarray(w, np.float64)
    assert w.shape == (rows, blocks * width)
    for k in range(blocks):
        blk = w[:, k * width : (k + 1) * width]
        # semi-orthogonal when not square: orthonormal columns (rows >= width) or rows
        gram = blk.T @ blk if rows >= width else blk @ blk.T
        np.testing.assert_allclose(gram, np.eye(min(rows, width)), atol=1e-5)


# Large enough that the Glorot spread check is meaningful, small enough to be instant.
_FIN = 40


def _glorot_cases():
    """The cells documented as Glorot input weights, orthogonal recurrent weights (per gate
    block) and zero biases: every registered cell and variant with a recurrent matrix
    (``w_h``, or Jordan's ``w_y_h``), at width 16 (readouts 12), LSTM forget bias 0."""
    out = {}
    for name, (entry, variant) in registry.variants().items():
        fields = entry.params_type._fields
        if "w_h" not in fields and "w_y_h" not in fields:
            continue  # minGRU/minLSTM (no recurrent matrix), the reservoir (its own scaling)
        if variant is not None and all(k.endswith("activation") for k in variant.options):
            continue  # the same init as its entry
        kwargs = {next(iter(entry.test_kwargs)): 16}
        if "output_size" in {**entry.test_kwargs, **(variant.options if variant else {})}:
            kwargs["output_size"] = 12
        if "forget_bias" in inspect.signature(entry.factory).parameters:
            kwargs["forget_bias"] = 0.0
        out[name] = kwargs
    return out


GLOROT = _glorot_cases()


@pytest.mark.parametrize("name", list(GLOROT))
def test_init_glorot_orthogonal_zero_bias(name):
    cell = registry.make_variant(name, **GLOROT[name])
    p = cell.init(jax.random.key(0), _FIN)
    H = cell.hidden_size
    blocks = p.w_x.shape[1] // H  # gates fused along the last axis, in the documented order
    _assert_glorot_blocks(p.w_x, _FIN, H, blocks)
    if p._fields[:3] == ("w_x", "w_y_h", "b"):  # Jordan: context (O) -> hidden (H)
        _assert_orthogonal_blocks(p.w_y_h, 12, H, 1)
    elif cell.name == "fully_recurrent":  # one pool of N units, recurrent (N, N)
        _assert_orthogonal_blocks(p.w_h, H, H, 1)
    else:
        _assert_orthogonal_blocks(p.w_h, H, H, blocks)
    if getattr(p, "w_y", None) is not None:
        _assert_glorot_blocks(p.w_y, H, 12, 1)
    biases = {k: v for k, v in p._asdict().items() if k.startswith("b") and v is not None}
    if getattr(p, "peephole", None) is not None:
        biases["peephole"] = p.peephole
    assert biases
    for k, v in biases.items():
        assert np.all(np.asarray(v) == 0), k
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(p))


def test_init_different_keys_differ_and_same_key_repeats():
    cell = jaxrnn.lstm(4)
    a, b = cell.init(jax.random.key(0), 3), cell.init(jax.random.key(1), 3)
    assert not np.allclose(a.w_x, b.w_x) and not np.allclose(a.w_h, b.w_h)
    assert_trees_close(a, cell.init(jax.random.key(0), 3), atol=0, rtol=0)


@pytest.mark.parametrize("forget_bias", [None, 0.0, 2.5])
def test_lstm_forget_bias(forget_bias):
    cell = jaxrnn.lstm(5) if forget_bias is None else jaxrnn.lstm(5, forget_bias=forget_bias)
    b = np.asarray(cell.init(jax.random.key(0), 3).b)
    expected = 1.0 if forget_bias is None else forget_bias
    # gate order (i, f, g, o): only the f block carries the forget bias
    np.testing.assert_array_equal(b[5:10], expected)
    np.testing.assert_array_equal(np.concatenate([b[:5], b[10:]]), 0.0)


def test_lstm_forget_bias_behaviour():
    """With zero weights, the forget bias alone sets the gate: f = sigmoid(forget_bias)."""
    cell = jaxrnn.lstm(2, forget_bias=3.0)
    p = cell.init(jax.random.key(0), 1)
    p = p._replace(w_x=jnp.zeros_like(p.w_x), w_h=jnp.zeros_like(p.w_h))
    c0 = jaxrnn.LSTMState(h=jnp.zeros(2), c=jnp.ones(2))
    c1, _ = cell.step(p, c0, cell.project(p, jnp.zeros(1)))
    # i = sigmoid(0) = 0.5, g = tanh(0) = 0, so c1 = f * c0
    np.testing.assert_allclose(c1.c, sigmoid(3.0), rtol=1e-6)


def test_gru_default_is_reset_after():
    default, cho = jaxrnn.gru(3), jaxrnn.gru(3, reset_after=False)
    pd, pc = default.init(jax.random.key(0), 2), cho.init(jax.random.key(0), 2)
    assert pd.b_h is not None and pd.b_h.shape == (9,)
    assert pc.b_h is None
    # the default's step is the reset-after equation, not Cho's
    params = random_params(default, seed=3, input_size=2)
    carry = random_carry(default, params, (2,), seed=4)
    x = np.random.default_rng(5).standard_normal((2, 2))
    got, _ = default.step(to_jax(params), to_jax(carry), default.project(to_jax(params), x))
    np.testing.assert_allclose(got.h, ref_step("gru", params, carry, x)[0].h, atol=2e-5)


def test_initial_carry_is_zero_with_batch_shape():
    for name, cell in CELLS.items():
        p = to_jax(random_params(cell))  # (no eager init: its values do not matter here)
        for shape in [(), (3,), (2, 3)]:
            c = cell.initial_carry(p, shape)
            for leaf in jax.tree_util.tree_leaves(c):
                assert leaf.shape[:-1] == shape, name
                assert not np.any(np.asarray(leaf)), name
        assert cell.input_size(p) == F


def test_fully_recurrent_outputs_are_designated_units():
    """y_t is the first ``output_size`` units of the state; the rest are hidden."""
    cell = jaxrnn.fully_recurrent(5, 2)
    params = to_jax(random_params(cell, seed=1))
    xp = cell.project(params, jnp.ones((3, F)))
    c, y = cell.step(params, cell.initial_carry(params, (3,)), xp)
    np.testing.assert_array_equal(y, c.h[:, :2])
    assert c.h.shape == (3, 5)


# --------------------------------------------------------------------------- argument checks
# One test per kind of argument, over every registered cell: the factory (or init) raises a
# TypeError naming the argument itself, in Python, before anything is traced.

def _args_with_default(kind):
    out = []
    for name, entry in registry.REGISTRY.items():
        for arg, p in inspect.signature(entry.factory).parameters.items():
            if arg in entry.options:
                continue
            d = p.default
            if kind is bool and isinstance(d, bool):
                out.append((name, arg))
            elif kind is float and isinstance(d, float):
                out.append((name, arg))
            elif kind == "dtype" and arg in ("compute_dtype", "param_dtype"):
                out.append((name, arg))
    return out


def _registered(name, **overrides):
    return registry.REGISTRY[name].make_for_tests(**overrides)


@pytest.mark.parametrize("name, arg", _args_with_default(bool))
def test_bool_arguments_must_be_bools(name, arg):
    """``lstm(8, peephole="no")`` used to turn peepholes on."""
    for bad in ("no", 1, None):
        with pytest.raises(TypeError, match=rf"^{arg}: expected a bool"):
            _registered(name, **{arg: bad})


@pytest.mark.parametrize("name, arg", _args_with_default(float))
def test_float_arguments_must_be_numbers(name, arg):
    for bad in ("one", None, True):
        with pytest.raises(TypeError, match=rf"^{arg}: expected a (finite )?float"):
            _registered(name, **{arg: bad})


@pytest.mark.parametrize("name, arg", _args_with_default("dtype"))
def test_dtype_arguments_must_be_floating_dtypes(name, arg):
    for bad in ("float99", "int32", 3):
        with pytest.raises(TypeError, match=rf"^{arg}: expected .*floating dtype"):
            _registered(name, **{arg: bad})
    # a name works as well as the type (JSON configs spell dtypes by name); params stay float32
    # (orthogonal init needs a QR, which has no bfloat16 kernel)
    dtype = jnp.bfloat16 if arg == "compute_dtype" else jnp.float32
    by_name = _registered(name, **{arg: jnp.dtype(dtype).name})
    by_type = _registered(name, **{arg: dtype})
    size = 1 if name == "convlstm" else F
    leaves = lambda c: jax.tree_util.tree_leaves(c.init(jax.random.key(0), size))
    assert [a.dtype for a in leaves(by_name)] == [a.dtype for a in leaves(by_type)]


@pytest.mark.parametrize("name", list(registry.REGISTRY))
def test_init_needs_a_prng_key(name):
    cell = _registered(name)
    size = 1 if name == "convlstm" else F
    for bad in (0, np.zeros(2), jnp.zeros((2,), jnp.int32), "key"):
        with pytest.raises(TypeError, match=r"^key: expected a PRNG key"):
            cell.init(bad, size)
    # typed and legacy keys, concrete or traced, are keys
    cell.init(jax.random.PRNGKey(0), size)
    jax.eval_shape(lambda k: cell.init(k, size), jax.random.key(0))
