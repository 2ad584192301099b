"""Flax NNX modules: same outputs and gradients as the functional API for the same parameters,
trainable with nnx.Optimizer inside a user's model, parameters convertible both ways."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxrnn
import jaxrnn.nnx as rnn
from jaxrnn.cells import registry
from jaxrnn.engine import parallel_run

F, H, B, T = 3, 5, 4, 9

# One case per NNX class (jaxrnn.nnx.MODULES, one per registered cell with a class name) built
# with the registry's test construction, sizes positional as the README writes them; an entry
# or variant stands for its class (the first variant, a superset of the plain cell: LSTM with
# peepholes, Elman with a readout) and so does an entry without a class of its own (gru_cho is
# GRU(reset_after=False)). The parallel cells alternate between ``parallel=True`` (the default:
# parallel_run) and ``parallel=False`` (the sequential engine). Gradients are compared for two
# cases: each costs two compilations, and the module holds no equation of its own.
WITH_GRADS = ("lstm_peephole", "gru_cho")


def _nnx_cases():
    cases, classes = {}, set()
    parallel_seen = 0
    for name, (entry, variant) in registry.variants().items():
        owner = entry if entry.class_name else next(
            e for e in registry.REGISTRY.values()
            if e.factory_path == entry.factory_path and e.class_name)
        if variant is None and entry.variants:
            continue  # its first variant stands for it
        if owner.class_name in classes and not entry.options:
            continue
        classes.add(owner.class_name)
        kwargs = {**entry.options, **entry.test_kwargs,
                  **({} if variant is None else variant.options)}
        positional = list(entry.test_kwargs)[:1 if entry.sizes == "hidden" else 2]
        sizes = [kwargs.pop(k) for k in positional]
        if entry.parallel:
            kwargs["parallel"] = parallel_seen % 2 == 0
            parallel_seen += 1
        cases[name] = (getattr(rnn, owner.class_name), sizes, kwargs)
    return cases


CASES = _nnx_cases()


def _data(seed=0):
    rng = np.random.default_rng(seed)  # NumPy: no per-shape XLA compilation in the set-up
    xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
    lengths = jnp.array([T, 7, 1, 0])
    return xs, lengths


def _random_params(init, input_size, seed=1):
    """Random values of the structure ``init`` returns, every entry non-zero (zero-initialised
    biases and peepholes would hide mistakes)."""
    shapes = jax.eval_shape(lambda k: init(k, input_size), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype), shapes)


def _grads_as_params(module, grads_state):
    """An nnx.grad State back into the functional params pytree (through the module itself)."""
    graphdef, _, rest = nnx.split(module, nnx.Param, ...)
    return nnx.merge(graphdef, grads_state, rest).get_params()


def _assert_trees_close(a, b, tol):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


def _loss_fn(ys, final):
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree_util.tree_leaves(final))


@pytest.mark.parametrize("name", list(CASES))
def test_module_matches_functional(name):
    cls, sizes, kwargs = CASES[name]
    cell = registry.make_variant(name)
    runner = parallel_run if kwargs.get("parallel") else jaxrnn.run
    with_grads = name in WITH_GRADS
    module = cls(F, *sizes, params=_random_params(cell.init, F), **kwargs)
    assert module.cell.name == cell.name
    params = module.get_params()
    assert type(params) is type(jax.eval_shape(lambda k: cell.init(k, F), jax.random.key(0)))
    xs, lengths = _data()
    if not with_grads:
        out_m = nnx.jit(lambda m: m(xs, lengths=lengths, return_carry=True))(module)
        out_f = jax.jit(lambda p: runner(cell, p, xs, lengths=lengths))(params)
        _assert_trees_close(out_m, out_f, 1e-6)
        return

    def loss_module(m):
        final, ys = m(xs, lengths=lengths, return_carry=True)
        return _loss_fn(ys, final), (final, ys)

    def loss_functional(p):
        final, ys = runner(cell, p, xs, lengths=lengths)
        return _loss_fn(ys, final), (final, ys)

    g_state, out_m = nnx.jit(nnx.grad(loss_module, has_aux=True))(module)
    g_module = _grads_as_params(module, g_state)
    g_functional, out_f = jax.jit(jax.grad(loss_functional, has_aux=True))(params)
    _assert_trees_close(out_m, out_f, 1e-6)
    assert jax.tree_util.tree_structure(g_module) == jax.tree_util.tree_structure(g_functional)
    for b in jax.tree_util.tree_leaves(g_functional):
        assert float(jnp.max(jnp.abs(b))) > 0  # the gradient reaches every parameter
    _assert_trees_close(g_module, g_functional, 1e-5)


def test_bidirectional_stack_matches_functional_layers():
    cell = jaxrnn.lstm(H)
    layer = jaxrnn.stacked([jaxrnn.bidirectional(cell), jaxrnn.bidirectional(cell)])
    module = rnn.RNN(cell, F, num_layers=2, bidirectional=True,
                     params=_random_params(layer.init, F))
    params = module.get_params()
    assert isinstance(params[1], jaxrnn.BidirectionalParams)
    assert params[1].forward.w_x.shape == (2 * H, 4 * H)  # layer 2 sees concat(fw, bw)
    xs, lengths = _data(3)

    def loss_module(m):
        final, ys = m(xs, lengths=lengths, return_carry=True)
        return _loss_fn(ys, final), (final, ys)

    def loss_functional(p):
        final, ys = layer.apply_with_carry(p, xs, lengths=lengths)
        return _loss_fn(ys, final), (final, ys)

    g_state, out_m = nnx.jit(nnx.grad(loss_module, has_aux=True))(module)
    g_functional, out_f = jax.jit(jax.grad(loss_functional, has_aux=True))(params)
    assert out_m[1].shape == (B, T, 2 * H)
    _assert_trees_close(out_m, out_f, 1e-6)
    _assert_trees_close(_grads_as_params(module, g_state), g_functional, 1e-5)


class SequenceRegressor(nnx.Module):
    """A user's own NNX model with a jaxrnn module inside: predicts a per-sequence number."""

    def __init__(self, rngs):
        self.rnn = rnn.RNN(jaxrnn.gru(16), 1, num_layers=1, return_sequences=False, rngs=rngs)
        self.head = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, xs, lengths):
        return self.head(self.rnn(xs, lengths=lengths))[..., 0]


def _regression_data(seed, n):
    # target: the mean of the valid inputs of each variable-length sequence
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(n, 12, 1)).astype(np.float32)
    lengths = rng.integers(3, 13, n)
    mask = np.arange(12) < lengths[:, None]
    ys = (np.sum(xs[..., 0] * mask, axis=1) / lengths).astype(np.float32)
    return jnp.asarray(xs), jnp.asarray(lengths), jnp.asarray(ys)


def test_nnx_training_loop_lowers_held_out_loss():
    model = SequenceRegressor(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x_tr, l_tr, y_tr = _regression_data(1, 256)
    x_te, l_te, y_te = _regression_data(2, 256)

    @nnx.jit
    def train_step(model, optimizer, xs, lengths, ys):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(xs, lengths) - ys) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def test_loss(model):
        return jnp.mean((model(x_te, l_te) - y_te) ** 2)

    before = float(test_loss(model))
    for i in range(40):
        sl = slice((i % 8) * 32, (i % 8 + 1) * 32)
        train_step(model, optimizer, x_tr[sl], l_tr[sl], y_tr[sl])
    after = float(test_loss(model))
    baseline = float(jnp.mean((y_te - jnp.mean(y_tr)) ** 2))  # predict the training mean
    print(f"held-out MSE: before {before:.4f}, after {after:.4f}, mean-baseline {baseline:.4f}")
    assert after < 0.25 * baseline and after < 0.25 * before


def test_params_convert_both_ways():
    cell = jaxrnn.lstm(H)
    p = _random_params(cell.init, F)
    module = rnn.LSTM(F, H, params=p)  # functional -> module (no rngs needed)
    back = module.get_params()  # module -> functional
    assert isinstance(back, jaxrnn.LSTMParams)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(p), strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(module.params.w_h, nnx.Param)
    np.testing.assert_array_equal(nnx.state(module, nnx.Param)["params"]["w_h"][...], p.w_h)

    q = _random_params(cell.init, F, seed=7)
    module.set_params(q)  # in place
    np.testing.assert_array_equal(module.params.b[...], q.b)
    xs, lengths = _data()
    np.testing.assert_allclose(module(xs, lengths=lengths),
                               jaxrnn.run(cell, q, xs, lengths=lengths)[1], rtol=1e-6, atol=1e-6)

    tree = rnn.to_variables(q)
    assert all(isinstance(v, nnx.Param) for v in jax.tree_util.tree_leaves(
        tree, is_leaf=lambda v: isinstance(v, nnx.Variable)))
    assert jax.tree_util.tree_structure(rnn.from_variables(tree)) == jax.tree_util.tree_structure(q)

    stack_params = _random_params(jaxrnn.stacked([jaxrnn.gru(4), jaxrnn.gru(4)]).init, F)
    stack = rnn.RNN(jaxrnn.gru(4), F, num_layers=2, params=stack_params)
    for a, b in zip(jax.tree_util.tree_leaves(stack.get_params()),
                    jax.tree_util.tree_leaves(stack_params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_dropout_only_in_training_mode():
    module = rnn.RNN(jaxrnn.gru(H), F, input_dropout=0.5, rngs=nnx.Rngs(0, dropout=1))
    xs, lengths = _data()
    forward = nnx.jit(lambda m: m(xs, lengths=lengths))  # the dropout stream advances inside
    eval_out = forward(module)
    np.testing.assert_array_equal(eval_out, forward(module))
    module.train()
    a, b = forward(module), forward(module)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3  # fresh masks from the dropout stream
    module.eval()
    np.testing.assert_array_equal(forward(module), eval_out)


def test_bad_input():
    with pytest.raises(ValueError, match="params"):
        rnn.LSTM(F, H, params=_random_params(jaxrnn.lstm(H + 1).init, F))
    with pytest.raises(ValueError, match="params"):
        rnn.GRU(F, H, params=_random_params(jaxrnn.lstm(H).init, F))
    with pytest.raises(TypeError, match="rngs"):
        rnn.LSTM(F, H)
    with pytest.raises(TypeError, match="cell"):
        rnn.CellModule("lstm", F, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_size"):
        rnn.Elman(0, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_layers"):
        rnn.RNN([jaxrnn.gru(4)], F, num_layers=2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="cells"):
        rnn.RNN([], F, rngs=nnx.Rngs(0))
    m = rnn.LSTM(F, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="params"):
        m.set_params(_random_params(jaxrnn.lstm(H).init, F + 1))
    no_rng = rnn.RNN(jaxrnn.gru(4), F, between_dropout=0.5, num_layers=2,
                     params=_random_params(jaxrnn.stacked([jaxrnn.gru(4)] * 2).init, F))
    with pytest.raises(ValueError, match="key"):
        no_rng(jnp.ones((2, 3, F)), deterministic=False)
