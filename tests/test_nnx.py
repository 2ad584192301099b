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
from jaxrnn.cells.minimal import min_gru, parallel_run

F, H, B, T = 3, 5, 4, 9

# module constructor -> the functional cell and runner it must agree with
FAMILIES = {
    "lstm": (lambda r: rnn.LSTM(F, H, rngs=r, peephole=True), jaxrnn.lstm(H, peephole=True),
             jaxrnn.run),
    "gru_cho": (lambda r: rnn.GRU(F, H, rngs=r, reset_after=False),
                jaxrnn.gru(H, reset_after=False), jaxrnn.run),
    "elman": (lambda r: rnn.Elman(F, H, rngs=r, output_size=2), jaxrnn.elman(H, output_size=2),
              jaxrnn.run),
    "jordan": (lambda r: rnn.Jordan(F, H, 2, rngs=r), jaxrnn.jordan(H, 2), jaxrnn.run),
    "fully_recurrent": (lambda r: rnn.FullyRecurrent(F, H, 2, rngs=r),
                        jaxrnn.fully_recurrent(H, 2), jaxrnn.run),
    "min_gru": (lambda r: rnn.MinGRU(F, H, rngs=r), min_gru(H), parallel_run),
}


def _data(seed=0):
    kx, _ = jax.random.split(jax.random.key(seed))
    xs = jax.random.normal(kx, (B, T, F))
    lengths = jnp.array([T, 7, 1, 0])
    return xs, lengths


def _perturb(params, seed=1):
    """Random values everywhere (zero-initialised biases and peepholes would hide mistakes)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten(
        [0.5 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)]
    )


def _grads_as_params(module, grads_state):
    """An nnx.grad State back into the functional params pytree (through the module itself)."""
    graphdef, _, rest = nnx.split(module, nnx.Param, ...)
    return nnx.merge(graphdef, grads_state, rest).get_params()


def _assert_trees_close(a, b, tol):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


def _loss_fn(ys, final):
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree_util.tree_leaves(final))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_module_matches_functional_outputs_and_gradients(name):
    make, cell, runner = FAMILIES[name]
    module = make(nnx.Rngs(0))
    module.set_params(_perturb(module.get_params()))
    params = module.get_params()
    assert type(params).__name__ == type(cell.init(jax.random.key(0), F)).__name__
    xs, lengths = _data()

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
    module = rnn.RNN(cell, F, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    module.set_params(_perturb(module.get_params()))
    params = module.get_params()
    layer = jaxrnn.stacked([jaxrnn.bidirectional(cell), jaxrnn.bidirectional(cell)])
    assert isinstance(params[1], jaxrnn.BidirectionalParams)
    assert params[1].forward.w_x.shape == (2 * H, 4 * H)  # layer 2 sees concat(fw, bw)
    xs, lengths = _data(3)

    def loss_module(m):
        final, ys = m(xs, lengths=lengths, return_carry=True)
        return _loss_fn(ys, final), (final, ys)

    def loss_functional(p):
        final, ys = layer.apply(p, xs, lengths=lengths)
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


def _regression_data(key, n):
    # target: the mean of the valid inputs of each variable-length sequence
    kx, kl = jax.random.split(key)
    xs = jax.random.normal(kx, (n, 12, 1))
    lengths = jax.random.randint(kl, (n,), 3, 13)
    mask = jnp.arange(12) < lengths[:, None]
    ys = jnp.sum(xs[..., 0] * mask, axis=1) / lengths
    return xs, lengths, ys


def test_nnx_training_loop_lowers_held_out_loss():
    model = SequenceRegressor(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x_tr, l_tr, y_tr = _regression_data(jax.random.key(1), 256)
    x_te, l_te, y_te = _regression_data(jax.random.key(2), 256)

    @nnx.jit
    def train_step(model, optimizer, xs, lengths, ys):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(xs, lengths) - ys) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def test_loss(model):
        return jnp.mean((model(x_te, l_te) - y_te) ** 2)

    before = float(test_loss(model))
    for i in range(60):
        sl = slice((i % 8) * 32, (i % 8 + 1) * 32)
        train_step(model, optimizer, x_tr[sl], l_tr[sl], y_tr[sl])
    after = float(test_loss(model))
    baseline = float(jnp.mean((y_te - jnp.mean(y_tr)) ** 2))  # predict the training mean
    print(f"held-out MSE: before {before:.4f}, after {after:.4f}, mean-baseline {baseline:.4f}")
    assert after < 0.25 * baseline and after < 0.25 * before


def test_params_convert_both_ways():
    cell = jaxrnn.lstm(H)
    p = _perturb(cell.init(jax.random.key(0), F))
    module = rnn.LSTM(F, H, params=p)  # functional -> module (no rngs needed)
    back = module.get_params()  # module -> functional
    assert isinstance(back, jaxrnn.LSTMParams)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(p)):
        np.testing.assert_array_equal(a, b)
    assert isinstance(module.params.w_h, nnx.Param)
    np.testing.assert_array_equal(nnx.state(module, nnx.Param)["params"]["w_h"][...], p.w_h)

    q = _perturb(p, seed=7)
    module.set_params(q)  # in place
    np.testing.assert_array_equal(module.params.b[...], q.b)
    xs, lengths = _data()
    np.testing.assert_allclose(module(xs, lengths=lengths),
                               jaxrnn.run(cell, q, xs, lengths=lengths)[1], rtol=1e-6, atol=1e-6)

    tree = rnn.to_variables(q)
    assert all(isinstance(v, nnx.Param) for v in jax.tree_util.tree_leaves(
        tree, is_leaf=lambda v: isinstance(v, nnx.Variable)))
    assert jax.tree_util.tree_structure(rnn.from_variables(tree)) == jax.tree_util.tree_structure(q)

    stack_params = jaxrnn.stacked([jaxrnn.gru(4), jaxrnn.gru(4)]).init(jax.random.key(1), F)
    stack = rnn.RNN(jaxrnn.gru(4), F, num_layers=2, params=stack_params)
    for a, b in zip(jax.tree_util.tree_leaves(stack.get_params()),
                    jax.tree_util.tree_leaves(stack_params)):
        np.testing.assert_array_equal(a, b)


def test_dropout_only_in_training_mode():
    module = rnn.RNN(jaxrnn.gru(H), F, num_layers=2, between_dropout=0.5,
                     rngs=nnx.Rngs(0, dropout=1))
    xs, lengths = _data()
    eval_out = module(xs, lengths=lengths)
    np.testing.assert_array_equal(eval_out, module(xs, lengths=lengths))
    module.train()
    a, b = module(xs, lengths=lengths), module(xs, lengths=lengths)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3  # fresh masks from the dropout stream
    module.eval()
    np.testing.assert_array_equal(module(xs, lengths=lengths), eval_out)


def test_bad_input():
    with pytest.raises(ValueError, match="params"):
        rnn.LSTM(F, H, params=jaxrnn.lstm(H + 1).init(jax.random.key(0), F))
    with pytest.raises(ValueError, match="params"):
        rnn.GRU(F, H, params=jaxrnn.lstm(H).init(jax.random.key(0), F))
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
        m.set_params(jaxrnn.lstm(H).init(jax.random.key(0), F + 1))
    no_rng = rnn.RNN(jaxrnn.gru(4), F, between_dropout=0.5, num_layers=2,
                     params=jaxrnn.stacked([jaxrnn.gru(4)] * 2).init(jax.random.key(0), F))
    with pytest.raises(ValueError, match="key"):
        no_rng(jnp.ones((2, 3, F)), deterministic=False)
