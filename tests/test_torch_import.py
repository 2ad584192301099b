"""PyTorch weight import/export: jaxrnn with imported weights must reproduce nn.LSTM / nn.GRU /
nn.RNN (outputs and final states within 1e-5), including packed padded batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jaxrnn  # noqa: E402
from jaxrnn.interop.torch import (  # noqa: E402
    carry_from_torch,
    final_state_to_torch,
    from_torch,
    params_from_state_dict,
    to_state_dict,
    to_torch,
)

F, H, B, T = 3, 8, 4, 7
TOL = dict(atol=1e-5, rtol=1e-5)


def _module(mode, num_layers, bidirectional, bias, batch_first, seed=0):
    torch.manual_seed(seed)
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, bias=bias,
              batch_first=batch_first)
    if mode == "LSTM":
        return torch.nn.LSTM(F, H, **kw)
    if mode == "GRU":
        return torch.nn.GRU(F, H, **kw)
    return torch.nn.RNN(F, H, nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kw)


def _np(t):
    return t.detach().numpy()


def _assert_states_close(ours, theirs):
    if isinstance(theirs, tuple):  # LSTM: (h_n, c_n)
        assert isinstance(ours, tuple) and len(ours) == 2
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a, _np(b), **TOL)
    else:
        np.testing.assert_allclose(ours, _np(theirs), **TOL)


CONFIGS = [
    # mode, num_layers, bidirectional, bias, batch_first
    ("LSTM", 2, True, True, False),
    ("LSTM", 1, False, False, True),
    ("GRU", 2, True, False, True),
    ("GRU", 1, False, True, False),
    ("RNN_TANH", 1, False, True, True),
    ("RNN_RELU", 2, True, True, False),
]


@pytest.mark.parametrize("mode,num_layers,bidirectional,bias,batch_first", CONFIGS)
def test_outputs_and_final_states_match_torch(mode, num_layers, bidirectional, bias, batch_first):
    module = _module(mode, num_layers, bidirectional, bias, batch_first)
    layer, params = from_torch(module)
    D = 2 if bidirectional else 1
    x = torch.randn((B, T, F) if batch_first else (T, B, F))
    h0 = torch.randn(num_layers * D, B, H)
    c0 = torch.randn(num_layers * D, B, H)
    with torch.no_grad():
        out, state = module(x, (h0, c0)) if mode == "LSTM" else module(x, h0)
    carry0 = carry_from_torch(h0, c0 if mode == "LSTM" else None, num_layers=num_layers,
                              bidirectional=bidirectional, mode=mode)
    carry, ys = jax.jit(lambda p, xs, c: layer.apply_with_carry(p, xs, carry=c))(
        params, jnp.asarray(_np(x)), carry0
    )
    assert ys.shape == tuple(out.shape) == (*x.shape[:2], D * H)
    np.testing.assert_allclose(ys, _np(out), **TOL)
    _assert_states_close(final_state_to_torch(carry), state)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_padded_batch_matches_pack_padded_sequence(mode):
    module = _module(mode, 2, True, True, True, seed=1)
    layer, params = from_torch(module)
    x = torch.randn(B, T, F)
    lengths = torch.tensor([T, 3, 1, 5])  # unsorted: enforce_sorted=False
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                     enforce_sorted=False)
    with torch.no_grad():
        out_packed, state = module(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=True, total_length=T)
    # garbage in the padding must not matter to jaxrnn either
    x_np = _np(x).copy()
    for b, n in enumerate(lengths.tolist()):
        x_np[b, n:] = 1e3
    carry, ys = jax.jit(lambda p, xs, n: layer.apply_with_carry(p, xs, lengths=n))(
        params, jnp.asarray(x_np), jnp.asarray(lengths.numpy())
    )
    np.testing.assert_allclose(ys, _np(out), **TOL)
    _assert_states_close(final_state_to_torch(carry), state)


def _random_params(mode, num_layers, bidirectional, seed=2):
    """jaxrnn params of the stacked layer's structure, N(0, 0.3^2) everywhere (non-zero biases);
    drawn with NumPy, so the set-up compiles nothing."""
    cell = {"LSTM": jaxrnn.lstm(H), "GRU": jaxrnn.gru(H), "RNN_TANH": jaxrnn.elman(H)}[mode]
    make = (lambda: jaxrnn.bidirectional(cell)) if bidirectional else (lambda: cell)
    init = jaxrnn.stacked([make() for _ in range(num_layers)]).init
    shapes = jax.eval_shape(lambda k: init(k, F), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), s.dtype), shapes)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_export_round_trip(mode):
    params = _random_params(mode, 2, True)
    module = to_torch(params, batch_first=True)
    assert type(module).__name__ == {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN"}[mode]
    assert module.num_layers == 2 and module.bidirectional

    # the exported module computes what jaxrnn computes
    layer = jaxrnn.stacked([jaxrnn.bidirectional(
        {"LSTM": jaxrnn.lstm(H), "GRU": jaxrnn.gru(H), "RNN_TANH": jaxrnn.elman(H)}[mode]
    )] * 2)
    x = np.random.default_rng(0).normal(size=(B, T, F)).astype(np.float32)
    ys = jax.jit(layer.apply)(params, jnp.asarray(x))
    with torch.no_grad():
        out, _ = module(torch.from_numpy(x))
    np.testing.assert_allclose(ys, _np(out), **TOL)

    # and importing it back gives the same parameters
    _, back = from_torch(module)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(back), leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)

    # torch -> jaxrnn -> torch: weights identical; the LSTM/RNN bias pair keeps its sum
    sd = module.state_dict()
    sd2 = to_state_dict(params_from_state_dict(sd, mode)[0])
    assert sorted(sd2) == sorted(sd)
    for k in sd:
        if k.startswith("weight") or mode == "GRU":
            np.testing.assert_array_equal(_np(sd2[k]), _np(sd[k]))
    for k in (k for k in sd if k.startswith("bias_ih")):
        k_hh = k.replace("bias_ih", "bias_hh")
        np.testing.assert_allclose(_np(sd2[k]) + _np(sd2[k_hh]), _np(sd[k]) + _np(sd[k_hh]),
                                   atol=1e-6)


def test_export_without_bias():
    params = _random_params("GRU", 1, False)
    zeroed = tuple(p._replace(b=jnp.zeros_like(p.b), b_h=jnp.zeros_like(p.b_h)) for p in params)
    module = to_torch(zeroed, bias=False)
    assert "bias_ih_l0" not in module.state_dict()
    _, back = from_torch(module)
    np.testing.assert_array_equal(back[0].b_h, 0.0)
    np.testing.assert_array_equal(back[0].w_h, params[0].w_h)


def test_bad_input():
    with pytest.raises(ValueError, match="proj_size"):
        from_torch(torch.nn.LSTM(F, H, proj_size=4))
    with pytest.raises(TypeError, match="module"):
        from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="mode"):  # nn.RNN's nonlinearity is not in its weights
        params_from_state_dict(torch.nn.RNN(F, H).state_dict())
    with pytest.raises(ValueError, match="mode"):
        params_from_state_dict(torch.nn.GRU(F, H).state_dict(), mode="LSTM")
    with pytest.raises(ValueError, match="state_dict"):
        params_from_state_dict({"weight": torch.zeros(3)})
    with pytest.raises(TypeError, match="state_dict"):
        params_from_state_dict([1, 2])
    z = np.zeros
    peep = jaxrnn.LSTMParams(z((F, 4 * H)), z((H, 4 * H)), z(4 * H), z((3, H)))
    with pytest.raises(ValueError, match="peephole"):
        to_state_dict((peep,))
    cho = jaxrnn.GRUParams(z((F, 3 * H)), z((H, 3 * H)), z(3 * H), None)
    with pytest.raises(ValueError, match="reset_after"):
        to_state_dict((cho,))
    readout = jaxrnn.ElmanParams(z((F, H)), z((H, H)), z(H), z((H, 2)), z(2))
    with pytest.raises(ValueError, match="readout"):
        to_state_dict((readout,))
    with pytest.raises(ValueError, match="bias"):
        to_state_dict(_random_params("LSTM", 1, False), bias=False)
    with pytest.raises(TypeError, match="params"):
        to_state_dict(({"w": 1},))
    with pytest.raises(ValueError, match="h0"):
        carry_from_torch(torch.zeros(3, B, H), num_layers=1, bidirectional=False, mode="GRU")
    with pytest.raises(ValueError, match="c0"):
        carry_from_torch(torch.zeros(1, B, H), num_layers=1, bidirectional=False, mode="LSTM")


# --------------------------------------------------------------------------- dtypes

@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_float64_modules_import_as_float64_and_match_torch_to_float64_rounding(mode, x64):
    module = _module(mode, 1, True, True, True).double()
    layer, params = from_torch(module)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float64")}
    x = np.random.default_rng(0).normal(size=(B, T, F))
    ys = layer.apply(params, jnp.asarray(x))
    with torch.no_grad():
        out, _ = module(torch.from_numpy(x))
    assert ys.dtype == jnp.float64
    # float32 would agree to ~1e-6 only; float64 end to end agrees to ~1e-15.
    np.testing.assert_allclose(ys, _np(out), rtol=1e-11, atol=1e-12)
    back = to_torch(params, batch_first=True)
    assert all(t.dtype == torch.float64 for t in back.state_dict().values())
    for k, v in module.state_dict().items():
        if k.startswith("weight") or mode == "GRU":
            np.testing.assert_array_equal(_np(back.state_dict()[k]), _np(v))


def test_float64_without_x64_is_an_error_not_a_silent_cast():
    assert not jax.config.jax_enable_x64
    module = torch.nn.GRU(F, H).double()
    with pytest.raises(ValueError, match=r"state_dict: holds float64 tensors.*dtype='float32'"):
        from_torch(module)
    _, params = from_torch(module, dtype="float32")
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}
    np.testing.assert_allclose(params[0].w_h, _np(module.weight_hh_l0).T.astype(np.float32))
    with pytest.raises(TypeError, match="dtype: expected a floating dtype"):
        from_torch(module, dtype="int32")


def test_bfloat16_and_float16_are_kept():
    for tdt, jdt in ((torch.bfloat16, jnp.bfloat16), (torch.float16, jnp.float16)):
        module = torch.nn.LSTM(F, H).to(tdt)
        _, params = from_torch(module)
        assert params[0].w_h.dtype == jdt
        np.testing.assert_array_equal(np.asarray(params[0].w_h, np.float32),
                                      module.weight_hh_l0.detach().float().numpy().T)
        sd = to_state_dict(params)
        assert sd["weight_hh_l0"].dtype == tdt


def test_to_state_dict_gives_numpy_without_torch(monkeypatch):
    params = _random_params("GRU", 2, True)
    expected = {k: _np(v) for k, v in to_state_dict(params).items()}
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import torch now fails
    arrays = to_state_dict(params, tensors=False)
    assert sorted(arrays) == sorted(expected)
    for k, v in arrays.items():
        assert type(v) is np.ndarray and v.dtype == np.float32 and v.flags.c_contiguous
        np.testing.assert_array_equal(v, expected[k])
    np.testing.assert_array_equal(arrays["weight_hh_l1_reverse"],
                                  np.asarray(params[1].backward.w_h).T)
    with pytest.raises(ImportError, match="needs PyTorch"):
        to_state_dict(params)
