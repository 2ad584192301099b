"""Bad input: one test per path. Each checks the error type, that the message names the argument
and shows what was received, and that it is raised before anything is traced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn.cells import registry

B, T, F, H = 2, 4, 3, 5
CELL = jaxrnn.lstm(H)
PARAMS = CELL.init(jax.random.key(0), F)
XS = jnp.ones((B, T, F))
KEY = jax.random.key(0)


def _spy_cell(cell):
    """``cell`` with its project and step counting their calls (traced or not): a check that
    raises before tracing leaves both counts at zero."""
    calls = {"project": 0, "step": 0}

    def project(p, x):
        calls["project"] += 1
        return cell.project(p, x)

    def step(p, c, xp):
        calls["step"] += 1
        return cell.step(p, c, xp)

    return cell._replace(project=project, step=step, parts=None), calls


def _raises(exc, match, fn, *, received=None):
    with pytest.raises(exc, match=match) as info:
        fn()
    if received is not None:
        assert received in str(info.value), str(info.value)
    return info


# --------------------------------------------------------------------------- run: xs

@pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    "xs, exc, received",
    [
        (jnp.ones((F,)), ValueError, "(3,)"),  # wrong rank
        (jnp.ones((B, T, F + 1)), ValueError, "(2, 4, 4)"),  # feature size vs params
        (jnp.ones((B, T, F), jnp.int32), TypeError, "int32"),  # integer inputs
    ],
    ids=["rank", "features", "integer"],
)
def test_run_bad_xs(xs, exc, received, use_jit):
    spy, calls = _spy_cell(CELL)
    fn = lambda p, x: jaxrnn.run(spy, p, x)
    fn = jax.jit(fn) if use_jit else fn
    _raises(exc, "^xs: ", lambda: fn(PARAMS, xs), received=received)
    assert calls == {"project": 0, "step": 0}, "raised after tracing had begun"


def test_run_xs_not_an_array():
    _raises(TypeError, "^xs: .*list", lambda: jaxrnn.run(CELL, PARAMS, [[1.0, 2.0, 3.0]]))


def test_run_time_major_rank_and_features():
    _raises(ValueError, r"^xs: .*\(T, B\.\.\., F\)",
            lambda: jaxrnn.run(CELL, PARAMS, jnp.ones(F), time_major=True))


def test_run_cell_not_a_cell():
    _raises(TypeError, "^cell: ", lambda: jaxrnn.run("lstm", PARAMS, XS), received="str")


# --------------------------------------------------------------------------- run: lengths

@pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    "lengths, exc, received",
    [
        (np.array([1, 2, 3]), ValueError, "(3,)"),  # wrong shape
        (np.array([[1, 2]]), ValueError, "(1, 2)"),  # wrong rank
        (np.array([1.0, 2.0]), TypeError, "float"),  # float dtype
        (np.array([-1, 2]), ValueError, "min -1"),  # negative
        (np.array([T + 1, 2]), ValueError, f"max {T + 1}"),  # longer than T
    ],
    ids=["shape", "rank", "float", "negative", "too-long"],
)
def test_run_bad_lengths(lengths, exc, received, use_jit):
    spy, calls = _spy_cell(CELL)
    # lengths are closed over (concrete), so their values are checkable under jit too
    n = jnp.asarray(lengths)
    fn = lambda p, x: jaxrnn.run(spy, p, x, lengths=n)
    fn = jax.jit(fn) if use_jit else fn
    _raises(exc, "^lengths: ", lambda: fn(PARAMS, XS), received=received)
    assert calls == {"project": 0, "step": 0}


def test_run_lengths_shape_checked_when_traced():
    """Traced lengths cannot have their values checked, but their shape and dtype still are."""
    f = jax.jit(lambda n: jaxrnn.run(CELL, PARAMS, XS, lengths=n))
    _raises(ValueError, "^lengths: ", lambda: f(jnp.array([1, 2, 3])), received="(3,)")
    _raises(TypeError, "^lengths: ", lambda: f(jnp.array([1.0, 2.0])), received="float32")


# --------------------------------------------------------------------------- run: carry

@pytest.mark.parametrize(
    "carry, exc, received",
    [
        (jnp.zeros((B, H)), ValueError, "PyTreeDef(*)"),  # a bare array for an LSTM carry
        (jaxrnn.GRUState(jnp.zeros((B, H))), ValueError, "GRUState"),  # another cell's carry
        (jaxrnn.LSTMState(jnp.zeros((B, H)), jnp.zeros((B + 1, H))), ValueError, "c=(3, 5)"),
        (jaxrnn.LSTMState(jnp.zeros((B, H + 1)), jnp.zeros((B, H))), ValueError, "h=(2, 6)"),
        (jaxrnn.LSTMState(jnp.zeros((B, H), jnp.int32), jnp.zeros((B, H))), TypeError, "int32"),
    ],
    ids=["bare-array", "other-cell", "batch-shape", "hidden-size", "integer"],
)
def test_run_bad_carry(carry, exc, received):
    spy, calls = _spy_cell(CELL)
    f = jax.jit(lambda p, x, c: jaxrnn.run(spy, p, x, carry=c))
    _raises(exc, "^carry: ", lambda: f(PARAMS, XS, carry), received=received)
    assert calls == {"project": 0, "step": 0}


# --------------------------------------------------------------------------- run: options

@pytest.mark.parametrize("value", [0, -1, 1.5, "2", None])
def test_run_bad_unroll(value):
    _raises(ValueError, "^unroll: ", lambda: jaxrnn.run(CELL, PARAMS, XS, unroll=value),
            received=repr(value))


@pytest.mark.parametrize("value", [0, -2, 2.5, "yes", None])
def test_run_bad_remat(value):
    _raises(ValueError, "^remat: ", lambda: jaxrnn.run(CELL, PARAMS, XS, remat=value),
            received=repr(value))


@pytest.mark.parametrize("option", ["reverse", "time_major", "hoist_projection", "fused_gradient"])
def test_run_bad_flag(option):
    _raises(TypeError, f"^{option}: ", lambda: jaxrnn.run(CELL, PARAMS, XS, **{option: "yes"}),
            received="'yes'")


# --------------------------------------------------------------------------- cell factories

def _factory_parameters(name):
    import inspect

    entry, _ = registry.variants(inputs=None)[name]
    return inspect.signature(entry.factory).parameters


def _test_options(name) -> dict:
    entry, variant = registry.variants(inputs=None)[name]
    return {**entry.options, **entry.test_kwargs, **({} if variant is None else variant.options)}


# every registered cell and test variant with each activation its factory takes (an output
# activation where the variant has a readout)
ACTIVATIONS = [(n, a) for n in registry.variants(inputs=None) for a in _factory_parameters(n)
               if a.endswith("activation")
               and (a != "output_activation" or "output_size" in _test_options(n))]


@pytest.mark.parametrize("name, argname", ACTIVATIONS)
def test_unknown_activation(name, argname):
    factory = lambda a: registry.make_variant(name, **{argname: a})
    info = _raises(ValueError, f"^{argname}: ", lambda: factory("tanhh"), received="'tanhh'")
    assert "sigmoid" in str(info.value)  # the message lists the known names
    factory(jnp.sin)  # callables are accepted


# every registered cell and test variant with each size it is built with
CELL_SIZES = [(n, k) for n in registry.variants(inputs=None) for k, v in _test_options(n).items()
              if isinstance(v, int) and not isinstance(v, bool)]
OTHER_SIZES = [
    (lambda n: jaxrnn.dense(n), "output_size"),
    (lambda n: jaxrnn.embedding(n, 3), "vocab_size"),
    (lambda n: jaxrnn.embedding(5, n), "features"),
    (lambda n: CELL.init(KEY, n), "input_size"),
]


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "4", None])
@pytest.mark.parametrize("name, argname", CELL_SIZES)
def test_cell_sizes_must_be_positive_ints(name, argname, value):
    factory = lambda n: registry.make_variant(name, **{argname: n})
    if value is None and _factory_parameters(name)[argname].default is None:
        factory(None)  # a size that defaults to None: the documented "none" (Elman's readout)
        return
    _raises(ValueError, f"^{argname}: ", lambda: factory(value), received=repr(value))


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "4", None])
@pytest.mark.parametrize("factory, argname", OTHER_SIZES)
def test_sizes_must_be_positive_ints(factory, argname, value):
    _raises(ValueError, f"^{argname}: ", lambda: factory(value), received=repr(value))


def test_elman_without_a_readout_has_its_hidden_width_as_output():
    assert jaxrnn.elman(H, output_size=None).output_size == H


def test_fully_recurrent_more_outputs_than_units():
    _raises(ValueError, "^output_size: ", lambda: jaxrnn.fully_recurrent(3, 4), received="4")


def test_gru_reset_after_must_be_bool():
    _raises(TypeError, "^reset_after: ", lambda: jaxrnn.gru(H, reset_after="no"),
            received="'no'")


@pytest.mark.parametrize(
    "shape, exc", [((-1,), ValueError), ("ab", TypeError), (2.5, TypeError), ((2.5,), TypeError)]
)
def test_initial_carry_bad_batch_shape(shape, exc):
    _raises(exc, "^batch_shape: ", lambda: CELL.initial_carry(PARAMS, shape))


# --------------------------------------------------------------------------- layers

def test_unknown_merge():
    _raises(ValueError, "^merge: ", lambda: jaxrnn.bidirectional(CELL, merge="max"),
            received="'max'")


def test_merge_sum_needs_equal_sizes():
    _raises(ValueError, "^merge: ",
            lambda: jaxrnn.bidirectional(CELL, jaxrnn.gru(H + 1), merge="sum"), received="6")


def test_bidirectional_layer_needs_backward():
    _raises(ValueError, "^backward: ", lambda: jaxrnn.bidirectional(jaxrnn.recurrent(CELL)))


def test_bidirectional_carry_must_be_a_pair():
    layer = jaxrnn.bidirectional(CELL)
    params = layer.init(KEY, F)
    _raises(ValueError, "^carry: ", lambda: layer.apply(params, XS, carry=(None, None, None)),
            received="3")


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, "0.5", None, True])
@pytest.mark.parametrize(
    "make, argname",
    [
        (lambda r: jaxrnn.recurrent(CELL, input_dropout=r), "input_dropout"),
        (lambda r: jaxrnn.recurrent(CELL, recurrent_dropout=r), "recurrent_dropout"),
        (lambda r: jaxrnn.stacked([CELL, CELL], between_dropout=r), "between_dropout"),
        (lambda r: jaxrnn.dropout(XS, r, KEY, deterministic=False), "rate"),
        (lambda r: jaxrnn.dropout(XS, r, KEY, deterministic=True), "rate"),
    ],
)
def test_bad_dropout_rate(make, argname, rate):
    _raises(ValueError, f"^{argname}: ", lambda: make(rate), received=repr(rate))


def test_sizes_accept_numpy_ints():
    cell = jaxrnn.gru(np.int64(4))
    params = cell.init(KEY, np.int32(F))
    assert cell.hidden_size == 4 and params.w_x.shape == (F, 12)
    assert cell.initial_carry(params, (np.int64(2),)).h.shape == (2, 4)


def test_dropout_rate_accepts_numpy_scalars():
    out = jaxrnn.dropout(XS, np.float32(0.5), KEY, deterministic=False)
    assert out.shape == XS.shape


def test_dropout_without_key():
    _raises(ValueError, "^key: ", lambda: jaxrnn.dropout(XS, 0.5, None, deterministic=False),
            received="None")
    layer = jaxrnn.recurrent(CELL, recurrent_dropout=0.5)
    _raises(ValueError, "^key: ", lambda: layer.apply(PARAMS, XS, deterministic=False))
    stack = jaxrnn.stacked([CELL, CELL], between_dropout=0.5)
    params = stack.init(KEY, F)
    _raises(ValueError, "^key: ", lambda: stack.apply(params, XS, deterministic=False))


def test_recurrent_layer_cell_type():
    _raises(TypeError, "^cell: ", lambda: jaxrnn.recurrent("lstm"), received="str")


def test_stacked_bad_layers_params_and_carry():
    _raises(ValueError, "^layers: ", lambda: jaxrnn.stacked([]))
    _raises(TypeError, r"^layers\[1\]: ", lambda: jaxrnn.stacked([CELL, 3]), received="int")
    stack = jaxrnn.stacked([CELL, CELL])
    params = stack.init(KEY, F)
    _raises(ValueError, "^params: ", lambda: stack.apply(params[:1], XS), received="1")
    _raises(ValueError, "^carry: ", lambda: stack.apply(params, XS, carry=(None,)),
            received="1")


def test_stacked_layer_feature_mismatch_names_xs():
    stack = jaxrnn.stacked([CELL, CELL])
    params = stack.init(KEY, F)
    _raises(ValueError, "^xs: ", lambda: stack.apply(params, jnp.ones((B, T, F + 2))),
            received="(2, 4, 5)")


def test_dense_feature_mismatch():
    layer = jaxrnn.dense(3)
    params = layer.init(KEY, 4)
    _raises(ValueError, "^x: ", lambda: layer.apply(params, jnp.ones((2, 5))),
            received="(2, 5)")


@pytest.mark.parametrize("ids, exc, received", [
    (np.array([0, 5]), ValueError, "max 5"),
    (np.array([-1, 2]), ValueError, "min -1"),
    (np.array([0.0, 1.0]), TypeError, "float"),
])
def test_embedding_bad_ids(ids, exc, received):
    emb = jaxrnn.embedding(5, 2)
    table = emb.init(KEY)
    _raises(exc, "^ids: ", lambda: emb.apply(table, ids), received=received)
    # under jit the ids are traced: the range cannot be checked, the dtype still is
    if exc is TypeError:
        _raises(exc, "^ids: ", lambda: jax.jit(emb.apply)(table, jnp.asarray(ids)))
