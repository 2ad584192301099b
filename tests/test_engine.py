"""The engine's backends against the plain scan, and the choice among them.

Every cell runs through every backend that claims it (``impl=...`` forced) and must give the plain
``lax.scan``'s values and gradients, padded and reversed; the table of which backend claims which
cell is written out here, so a backend that starts or stops claiming a cell fails a test.
``explain`` must name the backend ``impl="auto"`` takes and the reason for each one it skips.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import CELLS as REF_CELLS
from _reference import assert_trees_close, jit_o0

import jaxrnn
from jaxrnn import engine, kernels
from jaxrnn.cells import registry

F, B, T = 3, 3, 6
LENGTHS = np.array([6, 0, 4])

# name -> (cell, the backends that compute it exactly, given float32 on the CPU with kernels):
# every registered cell and test variant with the backends its registry entry declares (kernel,
# fused, parallel; checked against the cells and backends in test_registry), and two cases of
# the engine's own: an activation given as a callable that is tanh, and bfloat16 compute.
CELLS = {name: (cell, registry.backends_of(name)) for name, cell in REF_CELLS.items()}
CELLS["lstm_callable_tanh"] = (registry.make_variant("lstm", activation=jnp.tanh),
                               registry.backends_of("lstm"))
CELLS["min_gru_bf16"] = (registry.make_variant("min_gru", compute_dtype=jnp.bfloat16),
                         registry.backends_of("min_gru") - {"kernel"})
BACKENDS = ["cudnn", "kernel", "fused", "scan", "associative"]


def _claims(name):
    claims = set(CELLS[name][1])
    if jax.default_backend() != "cpu" or not kernels.available():
        claims.discard("kernel")
    if jax.default_backend() == "gpu" and "kernel" in CELLS[name][1] and name.startswith("lstm"):
        claims.add("cudnn")  # the plain LSTM
    return claims


def _setup(name, seed=0):
    cell = CELLS[name][0]
    params = cell.init(jax.random.key(seed), F)
    # non-zero biases and peepholes, so every term is exercised
    params = jax.tree_util.tree_map(
        lambda a: a + 0.3 * jax.random.normal(jax.random.key(seed + 1), a.shape), params)
    xs = jax.random.normal(jax.random.key(seed + 2), (B, T, F))
    return cell, params, xs


@functools.cache
def _loss_and_grads(name, impl, reverse):
    """Outputs, final carry and gradients (params, inputs and the initial carry) of one padded
    run from a non-zero carry, one compiled program; cached, so the plain scan's reference is
    computed once per cell and direction. The reversed run is also time-major and unrolled by
    2, so each backend's layout and unrolling are checked too."""
    cell, params, xs = _setup(name)
    carry = jax.tree_util.tree_map(
        lambda a: 0.5 * jax.random.normal(jax.random.key(7), a.shape, a.dtype),
        cell.initial_carry(params, (B,)))
    layout = {"time_major": True, "unroll": 2} if reverse else {}
    if reverse:
        xs = jnp.swapaxes(xs, 0, 1)

    def loss(p, x, c):
        final, ys = jaxrnn.run(cell, p, x, carry=c, impl=impl, lengths=jnp.asarray(LENGTHS),
                               reverse=reverse, **layout)
        ys = jnp.swapaxes(ys, 0, 1) if reverse else ys  # (B, T, O) for the checks below
        ct = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        value = jnp.sum(ys * ct) + sum(jnp.sum(c ** 2) for c in jax.tree_util.tree_leaves(final))
        return value, (final, ys)

    (value, out), grads = jit_o0(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        params, xs, carry)
    return out, value, grads


CASES = [(n, b) for n in CELLS for b in BACKENDS if b != "scan" and b in CELLS[n][1]]


# the two slowest kernel cases forwards (their reversed runs stay in the default run)
@pytest.mark.slow_when(lambda name, impl, reverse: (name in ("lstm", "jordan") and impl == "kernel"
                                                    and not reverse))
@pytest.mark.parametrize("name,impl", CASES, ids=[f"{n}-{b}" for n, b in CASES])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_backend_equals_plain_scan(name, impl, reverse):
    """Values, final carry and gradients (params, inputs, initial carry) of the backend equal
    the plain scan's, with padding (an empty, a full and a partial sequence); reversed:
    time-major and unrolled."""
    if impl not in _claims(name):
        pytest.skip(f"kernels {kernels.status()}")
    ref = _loss_and_grads(name, "scan", reverse)
    got = _loss_and_grads(name, impl, reverse)
    # bfloat16 products round differently when summed in another order (gradients above all)
    tol = 3e-2 if "bf16" in name else 3e-5
    assert_trees_close(got, ref, atol=tol, rtol=tol)
    # the padded steps are zero on both (not merely equal)
    ys = got[0][1]
    assert float(jnp.abs(ys[1]).max()) == 0.0 and float(jnp.abs(ys[2, 4:]).max()) == 0.0


@pytest.mark.parametrize("name", list(CELLS))
def test_forcing_a_backend_that_cannot_apply_names_impl(name):
    """Every backend outside the cell's claims raises a ValueError naming ``impl`` (before
    tracing); ``explain`` under ``impl='auto'`` takes the first claimed backend in order."""
    cell, params, xs = _setup(name)
    claims = _claims(name)
    for impl in BACKENDS:
        if impl in claims:
            assert engine.explain(cell, params, xs, impl=impl).backend == impl
        else:
            with pytest.raises(ValueError, match=f"^impl='{impl}': "):
                jaxrnn.run(cell, params, xs, impl=impl)
    auto = [b for b in ("cudnn", "kernel", "fused", "scan") if b in claims][0]
    exp = engine.explain(cell, params, xs)
    assert exp.backend == auto
    assert set(exp.reasons) == set(BACKENDS) - {auto}


def test_unknown_impl():
    cell, params, xs = _setup("lstm")
    for bad in ("cudnn?", None, 3):
        with pytest.raises(ValueError, match="^impl: expected one of"):
            jaxrnn.run(cell, params, xs, impl=bad)


# --------------------------------------------------------------------------- explain


def _reason(name_or_cell, backend, xs=None, params=None, **kw):
    cell = CELLS[name_or_cell][0] if isinstance(name_or_cell, str) else name_or_cell
    params = cell.init(jax.random.key(0), F) if params is None else params
    xs = jnp.ones((B, T, F)) if xs is None else xs
    exp = engine.explain(cell, params, xs, **kw)
    return exp, exp.reasons.get(backend)


@pytest.mark.skipif(not kernels.available(), reason="no kernels")
def test_explain_reasons():
    exp, _ = _reason("lstm", "kernel")
    assert exp.backend == "kernel" and "'kernel' comes first" in exp.reasons["fused"]
    assert "taken" in str(exp) and "kernel" in str(exp)

    exp, why = _reason("lstm_peephole", "kernel")
    assert exp.backend == "fused" and why == ("cell 'lstm' has peepholes; the CPU kernel computes "
                                              "the LSTM without them")
    exp, why = _reason("lstm_relu", "kernel")
    assert exp.backend == "fused" and why == "activation='relu': the lstm kernel computes tanh"
    exp, why = _reason(jaxrnn.lstm(4, compute_dtype=jnp.bfloat16), "kernel")
    assert exp.backend == "fused" and "compute_dtype=bfloat16" in why
    exp, why = _reason("lstm", "kernel", xs=jnp.ones((B, T, F), jnp.bfloat16))
    assert exp.backend == "fused" and why == "xs is bfloat16: the kernels compute in float32 only"
    bf_params = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16),
                                       CELLS["gru"][0].init(jax.random.key(0), F))
    exp, why = _reason("gru", "kernel", params=bf_params)
    assert why == "params.w_x is bfloat16: the kernels compute in float32 only"

    for kw in ({"remat": True}, {"remat": 3}):
        exp, why = _reason("lstm", "kernel", **kw)
        assert exp.backend == "scan" and "remat" in why and "remat" in exp.reasons["fused"]
    exp, why = _reason("lstm", "kernel", fused_gradient=False)
    assert exp.backend == "scan" and why.startswith("fused_gradient=False")
    exp, why = _reason("lstm", "kernel", hoist_projection=True)
    assert exp.backend == "fused" and why.startswith("hoist_projection=True")
    exp, why = _reason("lstm", "kernel", xs=jnp.ones((B, 0, F)))
    assert exp.backend == "scan" and "T = 0" in why

    masked = jaxrnn.with_recurrent_mask(CELLS["gru"][0], jnp.ones((4,)))
    exp, why = _reason(masked, "kernel")
    assert exp.backend == "scan" and "replaced step" in why and "replaced step" in \
        exp.reasons["fused"]
    exp, why = _reason("gru_cho", "kernel")
    assert exp.backend == "scan" and "no StepParts" in why
    exp, why = _reason(jaxrnn.convlstm(2, kernel_size=1), "kernel",
                       xs=jnp.ones((B, 1, 1, T, F)))
    assert exp.backend == "scan"
    exp, why = _reason("min_gru", "associative")
    assert exp.backend == "kernel" and why == "only on request (impl='associative')"
    exp, why = _reason("min_gru", "fused")
    assert "no recurrent product" in why

    with kernels.disabled():
        exp, why = _reason("lstm", "kernel")
    assert exp.backend == "fused" and why.startswith("the kernels are")


def test_explain_on_another_platform(monkeypatch):
    """On a GPU the LSTM takes cuDNN, other cells the fused scan; on the CPU cuDNN is never
    taken (the choice only: nothing runs here)."""
    exp, why = _reason("lstm", "cudnn")
    assert why == "the default backend is 'cpu': cuDNN runs on NVIDIA GPUs"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    exp, why = _reason("lstm", "kernel")
    assert exp.backend == "cudnn"
    assert why == "the default backend is 'gpu': the kernels run on the CPU"
    exp, why = _reason("gru", "kernel")
    assert exp.backend == "fused"
    assert why == "the default backend is 'gpu': the kernels run on the CPU"
    assert exp.reasons["cudnn"] == "cuDNN runs the LSTM only, not cell 'gru'"
    exp, why = _reason("lstm_peephole", "cudnn")
    assert exp.backend == "fused" and "peepholes" in why
    exp, why = _reason("lstm", "cudnn", xs=jnp.ones((B, T, F), jnp.bfloat16))
    assert exp.backend == "fused" and why == "xs is bfloat16: cuDNN is run in float32 only"
    exp, why = _reason("lstm", "cudnn", remat=True)
    assert exp.backend == "scan" and "remat" in why


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_cudnn_weight_layout_against_lstm_ref(lengths):
    """jaxrnn's LSTM params packed into cuDNN's flat vector and unpacked by
    ``jax.experimental.rnn`` give, through its reference LSTM ``lstm_ref``, the plain scan's
    outputs and final carry (a non-zero initial carry; ragged lengths too)."""
    from jax.experimental import rnn

    from jaxrnn.engine.backends.cudnn import pack_weights

    cell, params, xs = _setup("lstm")
    H = cell.hidden_size
    carry = jax.tree_util.tree_map(lambda a: 0.5 * jax.random.normal(jax.random.key(9), a.shape),
                                   cell.initial_carry(params, (B,)))
    full = np.full((B,), T) if lengths is None else np.maximum(lengths, 1)  # cuDNN: length >= 1
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(pack_weights(params), F, H, 1, False)
    ys, h_n, c_n = rnn.lstm_ref(xs, carry.h[None], carry.c[None], w_ih, w_hh, b_ih, b_hh,
                                jnp.asarray(full, jnp.int32), F, H, 1, 0.0, False)
    final, want = jaxrnn.run(cell, params, xs, carry=carry, lengths=jnp.asarray(full),
                             impl="scan")
    np.testing.assert_allclose(ys, want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(h_n[0], final.h, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(c_n[0], final.c, atol=1e-5, rtol=1e-5)


def test_explain_validates_as_run_does():
    cell, params, _ = _setup("lstm")
    with pytest.raises(ValueError, match="^xs: "):
        engine.explain(cell, params, jnp.ones((B, T, F + 1)))
    with pytest.raises(TypeError, match="^params: "):
        engine.explain(cell, None, jnp.ones((B, T, F)))


# --------------------------------------------------------------------------- NaN and inf


NAN_CASES = [(n, b) for n in registry.names(inputs="features") for b in ("fused", "associative")
             if b in CELLS[n][1]]


@pytest.mark.parametrize("name,impl", NAN_CASES, ids=[f"{n}-{b}" for n, b in NAN_CASES])
def test_nan_and_inf_in_xs_propagate_as_in_the_plain_scan(name, impl):
    """A NaN in one sequence and +-inf in another give, on the backend, the plain scan's outputs
    exactly where they are not finite and closely elsewhere (and the NaN does reach the
    outputs: the comparison is not vacuous)."""
    cell, params, xs = _setup(name)
    xs = xs.at[0, 2, 1].set(jnp.nan).at[2, 1, 0].set(jnp.inf).at[2, 3, 2].set(-jnp.inf)
    ref_final, ref = jit_o0(lambda p, x: jaxrnn.run(cell, p, x, impl="scan"))(params, xs)
    got_final, got = jit_o0(lambda p, x: jaxrnn.run(cell, p, x, impl=impl))(params, xs)
    assert bool(jnp.isnan(ref[0, 2:]).all()) and not bool(jnp.isnan(ref[1]).any())
    for a, b in ((got, ref), (got_final, ref_final)):
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
            np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
            np.testing.assert_array_equal(np.isinf(x), np.isinf(y))
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=3e-5, rtol=3e-5)
