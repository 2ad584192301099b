r"""PyTorch ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` weights in and out of jaxrnn.

PyTorch is imported lazily (only by the functions that build or read ``torch`` objects), so the
rest of jaxrnn never needs it; install it with ``pip install 'jaxrnn[torch]'``.

Which jaxrnn options reproduce PyTorch exactly
----------------------------------------------
=================================  ===========================================================
PyTorch                            jaxrnn
=================================  ===========================================================
``nn.LSTM`` (gates i, f, g, o)     ``jaxrnn.lstm(H)`` with the defaults (``tanh``/``sigmoid``,
                                   ``peephole=False``, ``compute_dtype=None``); the gate order
                                   is the same, so weights are only transposed:
                                   ``w_x = W_ih^T``, ``w_h = W_hh^T``, ``b = b_ih + b_hh``
                                   (the two biases always appear summed).
``nn.GRU`` (gates r, z, n)         ``jaxrnn.gru(H, reset_after=True)`` (the default): PyTorch
                                   applies the reset gate after the recurrent product,
                                   :math:`n = \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h +
                                   b_{hn}))`, which is why jaxrnn keeps the second bias:
                                   ``b = b_ih``, ``b_h = b_hh`` (not summable).
``nn.RNN(nonlinearity=...)``       ``jaxrnn.elman(H, activation="tanh" | "relu")`` without an
                                   ``output_size``; ``b = b_ih + b_hh``.
``num_layers=L``                   ``jaxrnn.stacked([...] * L)``; params are a tuple, one entry
                                   per layer.
``bidirectional=True``             each layer is ``jaxrnn.bidirectional(cell, merge="concat")``
                                   (forward features first, as PyTorch); its params are a
                                   :class:`jaxrnn.BidirectionalParams`.
``bias=False``                     biases are zeros in jaxrnn (exporting with ``bias=False``
                                   requires them to be zero).
``batch_first``                    jaxrnn layers are batch-major; :func:`from_torch` returns a
                                   layer in the module's own layout.
``pack_padded_sequence(x, lens)``  ``apply(params, x_padded, lengths=lens)``: the carry freezes
                                   after each sequence's last step, the backward direction
                                   starts at each sequence's own last step, outputs past a
                                   length are 0 (as ``pad_packed_sequence``).
``h_n``, ``c_n`` (``(L*D, B, H)``)  :func:`final_state_to_torch` / :func:`carry_from_torch`.
``dropout=p`` between layers       ``jaxrnn.stacked(..., between_dropout=p)`` (same
                                   distribution, different random numbers).
=================================  ===========================================================

Not supported: ``nn.LSTM(proj_size>0)`` (raises), LSTM peepholes and Elman readouts on export
(PyTorch has neither; raises). Results agree with PyTorch to float32 rounding (about 1e-6), not
bit for bit: the two libraries order their sums differently.

Dtypes: weights keep the tensors' dtype (``module.double()`` imports as float64, which JAX holds
only with ``jax_enable_x64``; without it that is an error, not a silent cast), or take
``dtype=``; :func:`to_state_dict` exports each parameter in its own dtype, and with
``tensors=False`` returns NumPy arrays without importing torch.

Params layout (both directions of conversion): a tuple with one entry per layer; each entry the
cell's NamedTuple (:class:`jaxrnn.LSTMParams`, :class:`jaxrnn.GRUParams`,
:class:`jaxrnn.ElmanParams`), or a :class:`jaxrnn.BidirectionalParams` of two of them -- exactly
the params of the layer built by :func:`layer_for`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells.base import Cell
from jaxrnn.cells.elman import ElmanParams, ElmanState, elman
from jaxrnn.cells.gru import GRUParams, GRUState, gru
from jaxrnn.cells.lstm import LSTMParams, LSTMState, lstm
from jaxrnn.layers import BidirectionalParams, Layer, recurrent, stacked
from jaxrnn.layers import bidirectional as bidirectional_layer

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_PARAMS_MODE = {LSTMParams: "LSTM", GRUParams: "GRU", ElmanParams: "RNN"}


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError(
            "jaxrnn.interop.torch needs PyTorch: pip install 'jaxrnn[torch]'"
        ) from e
    return torch


def _check_mode(mode) -> str:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    return mode


def _check_dtype(dtype):
    """None (keep each tensor's dtype) or a floating dtype JAX can hold."""
    if dtype is None:
        return None
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected None or a floating dtype (e.g. 'float32'), got "
                        f"{dtype!r}") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"dtype: expected a floating dtype, got {dt}")
    return dt


def _to_numpy(t, dtype=None, name: str = "state_dict") -> np.ndarray:
    """A NumPy copy of a tensor/array, keeping its dtype unless ``dtype`` is given.

    bfloat16 tensors (which NumPy does not know) come back as ``jnp.bfloat16`` arrays. Float64
    stays float64; JAX holds it only with ``jax_enable_x64``, so without it a float64 tensor is
    an error (pass ``dtype="float32"`` to convert) rather than a silent cast."""
    if hasattr(t, "detach"):  # a torch tensor
        t = t.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            a = t.float().numpy().astype(jnp.bfloat16)
        else:
            a = t.numpy()
    else:
        a = np.asarray(t)
    if dtype is not None:
        return a.astype(dtype)
    if a.dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{name}: holds float64 tensors, which JAX keeps only with x64 enabled "
            f"(jax.config.update('jax_enable_x64', True)); or pass dtype='float32' to convert"
        )
    return a


def cell_for(mode: str, hidden_size: int) -> Cell:
    """The jaxrnn cell that computes exactly what PyTorch's ``mode`` does (see the table)."""
    mode = _check_mode(mode)
    if mode == "LSTM":
        return lstm(hidden_size)
    if mode == "GRU":
        return gru(hidden_size, reset_after=True)
    return elman(hidden_size, activation="tanh" if mode == "RNN_TANH" else "relu")


def layer_for(mode: str, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
              *, batch_first: bool = True) -> Layer:
    """The jaxrnn layer equivalent to ``nn.<mode>(..., num_layers, bidirectional, batch_first)``.

    ``apply_with_carry(params, xs, *, lengths=None, carry=None)`` takes ``xs`` as ``(B, T, F)`` when
    ``batch_first`` else ``(T, B, F)`` and returns ``(carry, ys)`` in the same layout;
    ``carry`` is a tuple per layer (see :func:`final_state_to_torch`).
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers: expected a positive int, got {num_layers!r}")
    cell = cell_for(mode, hidden_size)
    make = (lambda: bidirectional_layer(cell, merge="concat")) if bidirectional else (
        lambda: recurrent(cell))
    layer = stacked([make() for _ in range(num_layers)])
    if batch_first:
        return layer

    def apply(params, xs, **kwargs):
        carry, ys = layer.apply_with_carry(params, jnp.swapaxes(xs, 0, 1), **kwargs)
        return carry, jnp.swapaxes(ys, 0, 1)

    return Layer(layer.init, lambda *a, **k: apply(*a, **k)[1], layer.output_size, apply)


def _infer_structure(sd: Mapping[str, Any]) -> tuple[int, bool, bool]:
    """``(num_layers, bidirectional, bias)`` from the state dict's keys."""
    if any(k.startswith("weight_hr_l") for k in sd):
        raise ValueError(
            "state_dict: nn.LSTM with proj_size > 0 (weight_hr_l*) has no jaxrnn equivalent"
        )
    layers = sorted({int(k[len("weight_ih_l"):].split("_")[0]) for k in sd
                     if k.startswith("weight_ih_l")})
    if not layers or layers != list(range(len(layers))):
        raise ValueError(
            f"state_dict: expected keys weight_ih_l0, weight_hh_l0, ... of an nn.LSTM/GRU/RNN, "
            f"got {sorted(sd)}"
        )
    bidir = "weight_ih_l0_reverse" in sd
    bias = "bias_ih_l0" in sd
    return len(layers), bidir, bias


def params_from_state_dict(state_dict: Mapping[str, Any], mode: str | None = None, *,
                           dtype=None):
    """jaxrnn params (tuple per layer, see the module docstring) from the ``state_dict()`` of an
    ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN``.

    Args:
      state_dict: mapping of PyTorch names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...) to
        tensors or arrays; layers, directions and biases are read from the keys.
      mode: ``"LSTM"``, ``"GRU"``, ``"RNN_TANH"`` or ``"RNN_RELU"``. LSTM and GRU are recognised
        from the weight shapes when omitted; an ``nn.RNN`` state dict does not record its
        nonlinearity, so it needs ``mode``.
      dtype: None keeps each tensor's dtype (float64 stays float64: needs
        ``jax_enable_x64``); a floating dtype converts every weight to it.

    Returns:
      ``(params, mode)``.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping (module.state_dict()), got "
                        f"{type(state_dict).__name__}")
    dtype = _check_dtype(dtype)
    num_layers, bidir, has_bias = _infer_structure(state_dict)
    w_hh0 = _to_numpy(state_dict["weight_hh_l0"], dtype)
    H = w_hh0.shape[1]
    gates = w_hh0.shape[0] // H
    if mode is None:
        if gates == 1:
            raise ValueError(
                "mode: an nn.RNN state dict does not record its nonlinearity; pass "
                "mode='RNN_TANH' or mode='RNN_RELU'"
            )
        mode = {4: "LSTM", 3: "GRU"}.get(gates)
        if mode is None:
            raise ValueError(f"state_dict: weight_hh_l0 of shape {w_hh0.shape} fits no mode")
    _check_mode(mode)
    if gates != _GATES[mode] or w_hh0.shape[0] != gates * H:
        raise ValueError(
            f"state_dict: weight_hh_l0 should be ({_GATES[mode]}*H, H) for mode {mode!r}, "
            f"got {w_hh0.shape}"
        )

    def one(layer: int, reverse: bool):
        sfx = f"_l{layer}" + ("_reverse" if reverse else "")
        w_ih = _to_numpy(state_dict["weight_ih" + sfx], dtype)
        w_hh = _to_numpy(state_dict["weight_hh" + sfx], dtype)
        G = _GATES[mode] * H
        if has_bias:
            b_ih = _to_numpy(state_dict["bias_ih" + sfx], dtype)
            b_hh = _to_numpy(state_dict["bias_hh" + sfx], dtype)
        else:
            b_ih = b_hh = np.zeros((G,), w_hh.dtype)
        w_x, w_h = jnp.asarray(w_ih.T), jnp.asarray(w_hh.T)
        if mode == "LSTM":
            return LSTMParams(w_x, w_h, jnp.asarray(b_ih + b_hh))
        if mode == "GRU":
            return GRUParams(w_x, w_h, jnp.asarray(b_ih), jnp.asarray(b_hh))
        return ElmanParams(w_x, w_h, jnp.asarray(b_ih + b_hh))

    params = tuple(
        BidirectionalParams(one(k, False), one(k, True)) if bidir else one(k, False)
        for k in range(num_layers)
    )
    return params, mode


def from_torch(module, *, dtype=None):
    """A jaxrnn layer and its params computing the same function as a PyTorch module.

    Args:
      module: an ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` (any ``num_layers``, ``bidirectional``,
        ``bias``, ``batch_first``; ``proj_size`` must be 0).
      dtype: None keeps the module's dtype (``module.double()`` gives float64 params, which
        needs ``jax_enable_x64``); or the dtype to convert the weights to.

    Returns:
      ``(layer, params)``: ``layer.apply_with_carry(params, xs, lengths=None, carry=None)`` returns
      ``(carry, ys)`` with ``xs``/``ys`` in the module's layout (``batch_first`` or not).
    """
    torch = _torch()
    if not isinstance(module, torch.nn.RNNBase):
        raise TypeError(f"module: expected an nn.LSTM, nn.GRU or nn.RNN, got "
                        f"{type(module).__name__}")
    if getattr(module, "proj_size", 0):
        raise ValueError(f"module: nn.LSTM with proj_size={module.proj_size} has no jaxrnn "
                         f"equivalent (expected 0)")
    params, mode = params_from_state_dict(module.state_dict(), module.mode, dtype=dtype)
    layer = layer_for(mode, module.hidden_size, module.num_layers, module.bidirectional,
                      batch_first=module.batch_first)
    return layer, params


def _mode_of(params) -> str:
    cell_params = params.forward if isinstance(params, BidirectionalParams) else params
    for cls, mode in _PARAMS_MODE.items():
        if isinstance(cell_params, cls):
            return mode
    raise TypeError(
        f"params: expected LSTMParams, GRUParams or ElmanParams per layer (or "
        f"BidirectionalParams of them), got {type(cell_params).__name__}"
    )


def to_state_dict(params, *, bias: bool = True, tensors: bool = True) -> dict:
    """A PyTorch ``state_dict`` from jaxrnn params (tuple per layer), each array in the dtype
    of its parameter (float64 stays float64).

    LSTM and Elman export their single bias as ``bias_ih`` with ``bias_hh = 0``; GRU exports
    ``b`` and ``b_h`` as ``bias_ih`` and ``bias_hh``. With ``bias=False`` there are no bias
    entries and every bias must be zero.

    ``tensors=True`` gives ``torch.Tensor`` values (ready for ``module.load_state_dict``);
    ``tensors=False`` gives C-contiguous NumPy arrays and does not import torch at all (e.g. to
    save with ``np.savez`` on a machine without PyTorch, or ``safetensors.numpy``).
    """
    if not isinstance(tensors, bool):
        raise TypeError(f"tensors: expected a bool, got {tensors!r}")
    if not isinstance(params, (tuple, list)) or not params:
        raise TypeError(f"params: expected a non-empty tuple with one entry per layer, got "
                        f"{type(params).__name__}")
    mode = _mode_of(params[0])
    bidir = isinstance(params[0], BidirectionalParams)
    sd = {}
    for k, layer in enumerate(params):
        if _mode_of(layer) != mode or isinstance(layer, BidirectionalParams) != bidir:
            kind = f"{mode} {'bidirectional ' if bidir else ''}layer"
            raise ValueError(f"params[{k}]: every layer must be a {kind}, got "
                             f"{type(layer).__name__}")
        dirs = [(layer.forward, ""), (layer.backward, "_reverse")] if bidir else [(layer, "")]
        for p, rev in dirs:
            sfx = f"_l{k}{rev}"
            if mode == "LSTM" and p.peephole is not None:
                raise ValueError(f"params[{k}]: PyTorch's LSTM has no peepholes; got peephole "
                                 f"weights of shape {tuple(p.peephole.shape)}")
            if mode == "GRU" and p.b_h is None:
                raise ValueError(f"params[{k}]: PyTorch's GRU is jaxrnn.gru(reset_after=True); "
                                 f"got params of the reset_after=False form (b_h is None)")
            if mode == "RNN" and p.w_y is not None:
                raise ValueError(f"params[{k}]: PyTorch's RNN has no readout; got Elman params "
                                 f"with w_y of shape {tuple(p.w_y.shape)}")
            sd["weight_ih" + sfx] = np.asarray(p.w_x).T
            sd["weight_hh" + sfx] = np.asarray(p.w_h).T
            b_ih = np.asarray(p.b)
            b_hh = np.asarray(p.b_h) if mode == "GRU" else np.zeros_like(b_ih)
            if bias:
                sd["bias_ih" + sfx], sd["bias_hh" + sfx] = b_ih, b_hh
            elif np.any(b_ih) or np.any(b_hh):
                raise ValueError(f"bias: False, but params[{k}] has non-zero biases; export "
                                 f"with bias=True")
    # copies: torch tensors must own writable memory (jax arrays' buffers are read-only)
    arrays = {k: np.array(v, order="C", copy=True) for k, v in sd.items()}
    if not tensors:
        return arrays
    torch = _torch()

    def tensor(a):
        if a.dtype == jnp.bfloat16:  # NumPy-side bfloat16 (ml_dtypes) is unknown to torch
            return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
        return torch.from_numpy(a)

    return {k: tensor(v) for k, v in arrays.items()}


def to_torch(params, *, nonlinearity: str = "tanh", bias: bool = True,
             batch_first: bool = True):
    """A new ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` holding jaxrnn ``params``.

    ``nonlinearity`` is used for Elman params (``"tanh"`` or ``"relu"``); the module type,
    sizes, ``num_layers`` and ``bidirectional`` come from ``params``.
    """
    torch = _torch()
    sd = to_state_dict(params, bias=bias)
    mode = _mode_of(params[0])
    first = params[0].forward if isinstance(params[0], BidirectionalParams) else params[0]
    input_size, hidden = int(first.w_x.shape[0]), int(first.w_h.shape[0])
    kw = dict(num_layers=len(params), bias=bias, batch_first=batch_first,
              bidirectional=isinstance(params[0], BidirectionalParams))
    if mode == "LSTM":
        module = torch.nn.LSTM(input_size, hidden, **kw)
    elif mode == "GRU":
        module = torch.nn.GRU(input_size, hidden, **kw)
    else:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        module = torch.nn.RNN(input_size, hidden, nonlinearity=nonlinearity, **kw)
    module = module.to(next(iter(sd.values())).dtype)  # the params' dtype, e.g. float64
    module.load_state_dict(sd, strict=True)
    return module


def final_state_to_torch(carry):
    """PyTorch's ``h_n`` (and ``c_n`` for LSTM), each ``(num_layers * num_directions, B, H)``,
    from the final carry of a :func:`layer_for` layer (a tuple per layer). Returns ``h_n`` or
    ``(h_n, c_n)`` as jax arrays."""
    states = []
    for layer in carry:
        states.extend(layer if isinstance(layer, tuple) and not hasattr(layer, "_fields")
                      else [layer])
    h_n = jnp.stack([s.h for s in states])
    if isinstance(states[0], LSTMState):
        return h_n, jnp.stack([s.c for s in states])
    return h_n


def carry_from_torch(h0, c0=None, *, num_layers: int, bidirectional: bool, mode: str,
                     dtype=None):
    """The initial carry of a :func:`layer_for` layer from PyTorch's ``h_0`` (and ``c_0``),
    each ``(num_layers * num_directions, B, H)``, in their dtype (or ``dtype``)."""
    mode = _check_mode(mode)
    dtype = _check_dtype(dtype)
    h0 = jnp.asarray(_to_numpy(h0, dtype, "h0"))
    D = 2 if bidirectional else 1
    if h0.ndim != 3 or h0.shape[0] != num_layers * D:
        raise ValueError(f"h0: expected shape ({num_layers * D}, B, H), got {tuple(h0.shape)}")
    if mode == "LSTM":
        if c0 is None:
            raise ValueError("c0: an LSTM needs c0 as well as h0, got None")
        c0 = jnp.asarray(_to_numpy(c0, dtype, "c0"))
        if c0.shape != h0.shape:
            raise ValueError(f"c0: expected shape {tuple(h0.shape)} (that of h0), "
                             f"got {tuple(c0.shape)}")
        make = lambda i: LSTMState(h0[i], c0[i])
    elif mode == "GRU":
        make = lambda i: GRUState(h0[i])
    else:
        make = lambda i: ElmanState(h0[i])
    if bidirectional:
        return tuple((make(2 * k), make(2 * k + 1)) for k in range(num_layers))
    return tuple(make(k) for k in range(num_layers))


__all__ = [
    "MODES",
    "cell_for",
    "layer_for",
    "params_from_state_dict",
    "from_torch",
    "to_state_dict",
    "to_torch",
    "final_state_to_torch",
    "carry_from_torch",
]
