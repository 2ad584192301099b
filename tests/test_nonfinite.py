"""Non-finite guard: an Elman net with a large recurrent scale on a long sequence gets NaN
gradient entries; without the guard the clipped update makes the parameters NaN, with it the
update is skipped and they stay finite (and fit stops, or skips, as asked)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn
from jaxrnn import train

T = 10_000  # long enough that tanh' * W_h products overflow to inf and meet zeros: NaN
LAYER = jaxrnn.recurrent(jaxrnn.elman(8))


def exploding_params():
    p = LAYER.init(jax.random.key(0), 3)
    return p._replace(w_h=p.w_h * 3.0)  # recurrent scale 3: the gradient explodes over T


def apply(params, inputs, *, lengths=None, key=None, deterministic=True):
    ys = LAYER.apply(params, inputs, lengths=lengths)
    return jaxrnn.last_valid(ys, lengths)


def batch():
    x = np.random.default_rng(0).normal(size=(2, T, 3)).astype(np.float32)
    return {"inputs": x, "targets": np.zeros((2, 8), np.float32)}


def all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(tree))


@pytest.fixture(scope="module")
def grads_are_nan():
    loss = lambda p: train.mse(apply(p, batch()["inputs"]), batch()["targets"])  # noqa: E731
    value, grads = jax.jit(jax.value_and_grad(loss))(exploding_params())
    # The premise of the test, checked: a finite loss whose gradient has NaN entries.
    assert np.isfinite(float(value)) and not all_finite(grads)


def test_without_the_guard_the_params_become_nan(grads_are_nan):
    opt = train.make_optimizer(1e-2, clip_norm=1.0)
    step = train.make_train_step(apply, "mse", opt)
    state, logs = step(train.init_train_state(exploding_params(), opt, 0), batch())
    assert not bool(logs["finite"])
    assert not all_finite(state.params)


def test_with_the_guard_the_update_is_skipped_and_params_stay_finite(grads_are_nan):
    opt = train.make_optimizer(1e-2, clip_norm=1.0, skip_nonfinite=True)
    step = train.make_train_step(apply, "mse", opt, donate=False)
    start = train.init_train_state(exploding_params(), opt, 0)
    state, logs = step(start, batch())
    assert not bool(logs["finite"])
    assert all_finite(state.params)
    for a, b in zip(jax.tree_util.tree_leaves(state.params),
                    jax.tree_util.tree_leaves(start.params), strict=True):
        np.testing.assert_array_equal(a, b)  # skipped whole: unchanged
    assert int(state.opt_state.total_notfinite) == 1
    assert isinstance(state.opt_state, optax.ApplyIfFiniteState)


# --------------------------------------------------------------------------- fit

def two_examples():
    """Example 0 explodes (NaN gradient); example 1 is 4 steps long (its gradient is finite).
    (All zeros over the full T is not enough: h stays 0, but its cotangent still grows by the
    recurrent scale 3 per step, overflows to inf and meets mixed signs: NaN, on every backend.)"""
    b = batch()
    x = np.concatenate([b["inputs"][:1], np.zeros_like(b["inputs"][:1])])
    return {"inputs": x, "targets": np.full((2, 8), 0.5, np.float32),
            "lengths": np.array([T, 4], np.int32)}


def test_fit_stops_naming_the_epoch_and_step_and_writes_no_checkpoint(grads_are_nan, tmp_path):
    data = two_examples()
    opt = train.make_optimizer(1e-2, clip_norm=1.0)
    with pytest.raises(train.NonFiniteLossError,
                       match=r"loss: not finite .* at update (1|2) \(epoch 1, batch (1|2)\)"):
        train.fit(apply, exploding_params(), "mse", opt, data, batch_size=1, epochs=2,
                  checkpoint_dir=tmp_path, progress=False, verbose=False)
    assert not (tmp_path / jaxrnn.io.LATEST).exists()


def test_fit_with_skip_nonfinite_skips_the_bad_update_and_stays_finite(grads_are_nan, capsys):
    data = two_examples()
    opt = train.make_optimizer(1e-2, clip_norm=1.0)
    res = train.fit(apply, exploding_params(), "mse", opt, data, batch_size=1, epochs=2,
                    skip_nonfinite=True, progress=False, verbose=True)
    assert all_finite(res.params) and all(np.isfinite(res.history["loss"]))
    assert int(res.state.opt_state.total_notfinite) == 2  # one bad example per epoch
    assert "skipped 1 non-finite updates" in capsys.readouterr().out
    # The good example trained: the parameters moved.
    assert not np.array_equal(np.asarray(res.params.b), np.asarray(exploding_params().b))


def test_fit_infers_the_guard_from_the_optimizer_and_stops_if_nothing_trains(grads_are_nan):
    data = {k: v[:1] for k, v in two_examples().items()}  # only the exploding example
    opt = train.make_optimizer(1e-2, clip_norm=1.0, skip_nonfinite=True)
    with pytest.raises(train.NonFiniteLossError, match="every update of epoch 1"):
        train.fit(apply, exploding_params(), "mse", opt, data, batch_size=1, progress=False,
                  verbose=False)
