"""The recurrences of LSTM, GRU, Elman-type, Jordan and minGRU/minLSTM
cells as differentiable JAX functions over the
kernels of ``jaxrnn/kernels/*.cc``.

Each function takes the inputs of all steps, ``x`` ``(T, B, F)`` time-major, the input weights
and bias, the recurrent weights and the initial carry, and returns the carry of every step; the
kernel computes both products of each step. Its custom VJP calls the backward kernel for the
cotangents of the pre-activations ``dZ``, then forms every weight gradient as one product over
all steps (``X^T dZ``, ``H_prev^T dZ``, by a kernel that reads ``x`` and ``h0, hs`` in place),
the input gradient as ``dZ W_x^T`` and the bias gradients as column sums of ``dZ``, also by
kernels: XLA's own products and reductions split their sums by the size of its thread pool, so
the values would change with the CPUs the process may use (issue 27).
``lengths`` (``(B,)`` int32 or ``None``) freezes each row's carry from its length on, as in
:func:`jaxrnn.run`.

The engine's kernel backend (:mod:`jaxrnn.engine.backends.cpu_kernels`) calls these; users
normally never do.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import kernels

_f32 = jnp.float32


def _spec(shape):
    return jax.ShapeDtypeStruct(tuple(shape), _f32)


# C++ attribute types (as the handlers declare them) -> the NumPy scalar type XLA needs.
_ATTR_TYPES = {"bool": bool, "float": np.float32, "int64_t": np.int64}


def vmap_method(target: str) -> str:
    """How ``jax.vmap`` maps the kernel ``target``: ``"broadcast_all"`` for the handlers that
    take leading member axes on every operand (``JAXRNN_MEMBER_HANDLER`` in ``common.h``: under
    vmap, one call runs every member, the members split over the threads), else
    ``"sequential"`` (a loop with one kernel call per member)."""
    return "broadcast_all" if kernels.operands(target).get("members") else "sequential"


def _call(target, outs, *, aliases=None, **operands):
    """Call the kernel ``target`` with every operand by name: ``operands`` holds its inputs and
    attributes, ``outs`` the shape of each result, ``aliases`` maps an input to the result that
    takes over its buffer. Returns the results by name. The order the handler binds them in is
    read from the library (each handler's one operand list, see ``common.h``), so it is not
    written again here."""
    order = kernels.operands(target)
    names = set(order["args"]) | set(order["attrs"])
    if set(operands) != names or set(outs) != set(order["rets"]):
        raise TypeError(f"{target} takes inputs and attributes {sorted(names)} and results "
                        f"{order['rets']}; got {sorted(operands)} and {sorted(outs)}")
    args = [operands[n] for n in order["args"]]
    attrs = {n: _ATTR_TYPES[t](operands[n]) for n, t in order["attrs"].items()}
    alias_index = {order["args"].index(i): order["rets"].index(o)
                   for i, o in (aliases or {}).items()}
    results = jax.ffi.ffi_call(target, [_spec(outs[n]) for n in order["rets"]],
                               vmap_method=vmap_method(target),
                               input_output_aliases=alias_index or None)(*args, **attrs)
    return dict(zip(order["rets"], results, strict=True))


def _lens_arg(lens):
    return jnp.zeros((1,), jnp.int32) if lens is None else lens.astype(jnp.int32)


def _prev_outer(h0, hs, dz):
    """``sum_t h_{t-1}^T dz_t`` (``h_{-1} = h0``): the recurrent weights' gradient, one product
    over all steps, computed by the kernel straight from ``h0`` and ``hs`` (XLA would first
    copy them into a shifted ``(T, B, H)`` buffer)."""
    return _call("jaxrnn_steps_outer", {"out": (hs.shape[-1], dz.shape[-1])}, h0=h0, hs=hs, dz=dz,
                 shifted=True)["out"]


def _steps_outer(x, dz):
    """``sum_t x_t^T dz_t``, the input weights' gradient, by the same kernel: XLA's own product
    wants ``x`` as rows and made a second copy of the (time-major) ``x`` for it. The kernel's
    first operand (the initial carry) is not read unshifted; ``x`` stands in for it."""
    return _call("jaxrnn_steps_outer", {"out": (x.shape[-1], dz.shape[-1])}, h0=x, hs=x, dz=dz,
                 shifted=False)["out"]


def _rows(a):
    return a.reshape(-1, a.shape[-1])


def _rows_times(a, w, bias=None, *, transposed=False):
    """``a[:, :K] @ w (+ bias)`` for rows ``a`` ``(M, Ka)``; ``w`` is ``(K, N)``, or ``(N, K)``
    when ``transposed`` (the product is then with ``w.T``). Each output is summed in one fixed
    order whatever the thread count."""
    n = w.shape[0] if transposed else w.shape[1]
    return _call("jaxrnn_rows_times", {"out": (a.shape[0], n)}, a=a, w=w,
                 bias=jnp.zeros((1,), _f32) if bias is None else bias, transposed=transposed,
                 biased=bias is not None)["out"]


def _column_sums(a):
    """The sum of the rows of ``a`` ``(M, N)``, each column in one fixed order."""
    return _call("jaxrnn_column_sums", {"out": (a.shape[-1],)}, a=a)["out"]


def _input_grads(x, w_x, dxp):
    """Cotangents of ``x``, ``W_x`` and ``b`` from those of ``xp = x W_x + b`` (all steps)."""
    rows = _rows(dxp)
    return (_rows_times(rows, w_x, transposed=True).reshape(x.shape), _steps_outer(x, dxp),
            _column_sums(rows))


# ----------------------------------------------------------------------------- LSTM

def _lstm_forward(x, w_x, b, w_h, h0, c0, lens, training):
    # H is the carry's: the kernel checks every weight against it (and names the one that
    # does not fit) instead of reading a carry of another width.
    T, B, _ = x.shape
    H = h0.shape[-1]
    out = _call("jaxrnn_lstm_forward",
                {"hs": (T, B, H), "c_last": (B, H), "cs": (T, B, H) if training else (1,),
                 "gates": (T, B, 4 * H) if training else (1,)},
                x=x, w_x=w_x, bias=b, w_h=w_h, h0=h0, c0=c0, lengths=_lens_arg(lens),
                masked=lens is not None, training=training)
    return out["hs"], out["c_last"], out["cs"], out["gates"]


@partial(jax.custom_vjp, nondiff_argnums=(7,))
def _lstm(x, w_x, b, w_h, h0, c0, lens, masked):
    hs, c_last, _, _ = _lstm_forward(x, w_x, b, w_h, h0, c0, lens if masked else None, False)
    return hs, c_last


def _lstm_fwd(x, w_x, b, w_h, h0, c0, lens, masked):
    hs, c_last, cs, gates = _lstm_forward(x, w_x, b, w_h, h0, c0, lens if masked else None, True)
    return (hs, c_last), (x, w_x, w_h, h0, c0, lens, hs, cs, gates)


def _lstm_bwd(masked, res, cts):
    x, w_x, w_h, h0, c0, lens, hs, cs, gates = res
    d_hs, d_c_last = cts
    B, H = h0.shape
    # dz overwrites the saved gates step by step (each step's gates are read before its dz is
    # written): no second (T, B, 4H) buffer, whose fresh pages cost more than its arithmetic.
    out = _call(
        "jaxrnn_lstm_backward", {"dz": gates.shape, "dh0": (B, H), "dc0": (B, H)},
        w_h=w_h, gates=gates, cs=cs, c0=c0, d_hs=d_hs.astype(_f32),
        d_c_last=d_c_last.astype(_f32), lengths=_lens_arg(lens if masked else None),
        masked=masked, aliases={"gates": "dz"},
    )
    dz, dh0, dc0 = out["dz"], out["dh0"], out["dc0"]
    dx, dw_x, db = _input_grads(x, w_x, dz)
    dw_h = _prev_outer(h0, hs, dz)
    return dx, dw_x, db, dw_h, dh0, dc0, None


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


def lstm_sequence(x, w_x, b, w_h, h0, c0, lengths=None):
    """LSTM over all steps, gate order (i, f, g, o), ``z = x W_x + b + h W_h``: returns
    ``(hs (T, B, H), c_T (B, H))``; ``hs[t]`` is the carry after step ``t`` (frozen past a row's
    length)."""
    return _lstm(x, w_x, b, w_h, h0, c0, _lens_arg(lengths), lengths is not None)


# ----------------------------------------------------------------------------- GRU

def _gru_forward(x, w_x, b, w_h, b_h, h0, lens, training):
    T, B, _ = x.shape
    H = h0.shape[-1]
    out = _call("jaxrnn_gru_forward",
                {"hs": (T, B, H), "saved": (T, B, 4 * H) if training else (1,)},
                x=x, w_x=w_x, bias=b, w_h=w_h, b_h=b_h, h0=h0, lengths=_lens_arg(lens),
                masked=lens is not None, training=training)
    return out["hs"], out["saved"]


@partial(jax.custom_vjp, nondiff_argnums=(7,))
def _gru(x, w_x, b, w_h, b_h, h0, lens, masked):
    hs, _ = _gru_forward(x, w_x, b, w_h, b_h, h0, lens if masked else None, False)
    return hs


def _gru_fwd(x, w_x, b, w_h, b_h, h0, lens, masked):
    hs, saved = _gru_forward(x, w_x, b, w_h, b_h, h0, lens if masked else None, True)
    return hs, (x, w_x, w_h, h0, lens, hs, saved)


def _gru_bwd(masked, res, d_hs):
    x, w_x, w_h, h0, lens, hs, saved = res
    B, H = h0.shape
    # d4 = (d r_pre, d u_pre, d n_pre, d hn) per step, over the saved buffer (see the kernel):
    # xp's cotangent is blocks 0-2, hp's blocks 0, 1, 3. The weight products run on all four
    # blocks (the extra block costs less than copying out two (T, B, 3H) slices) and the
    # unneeded columns are dropped from the small results.
    out = _call(
        "jaxrnn_gru_backward", {"d4": saved.shape, "dh0": (B, H)},
        w_h=w_h, saved=saved, hs=hs, h0=h0, d_hs=d_hs.astype(_f32),
        lengths=_lens_arg(lens if masked else None), masked=masked, aliases={"saved": "d4"},
    )
    d4, dh0 = out["d4"], out["dh0"]
    rows = _rows(d4)
    dx = _rows_times(rows, w_x, transposed=True).reshape(x.shape)  # blocks 0-2 of d4
    sums = _column_sums(rows)
    dw_x = _steps_outer(x, d4)[:, : 3 * H]
    db = sums[: 3 * H]
    full = _prev_outer(h0, hs, d4)
    dw_h = jnp.concatenate([full[:, : 2 * H], full[:, 3 * H :]], axis=1)
    db_h = jnp.concatenate([sums[: 2 * H], sums[3 * H :]])
    return dx, dw_x, db, dw_h, db_h, dh0, None


_gru.defvjp(_gru_fwd, _gru_bwd)


def gru_sequence(x, w_x, b, w_h, b_h, h0, lengths=None):
    """GRU (reset-after form, gate order (r, z, n), ``xp = x W_x + b``, ``hp = h W_h + b_h``)
    over all steps: returns ``hs (T, B, H)``."""
    return _gru(x, w_x, b, w_h, b_h, h0, _lens_arg(lengths), lengths is not None)


# ----------------------------------------------------------------------------- Elman / leaky

def _elman_forward(x, w_x, b, w_h, h0, lens, leak, training):
    T, B, _ = x.shape
    H = h0.shape[-1]
    save_s = training and leak != 1.0
    out = _call("jaxrnn_elman_forward", {"hs": (T, B, H), "ss": (T, B, H) if save_s else (1,)},
                x=x, w_x=w_x, bias=b, w_h=w_h, h0=h0, lengths=_lens_arg(lens),
                masked=lens is not None, save_s=save_s, leak=leak)
    return out["hs"], out["ss"]


@partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _elman(x, w_x, b, w_h, h0, lens, masked, leak):
    hs, _ = _elman_forward(x, w_x, b, w_h, h0, lens if masked else None, leak, False)
    return hs


def _elman_fwd(x, w_x, b, w_h, h0, lens, masked, leak):
    hs, ss = _elman_forward(x, w_x, b, w_h, h0, lens if masked else None, leak, True)
    return hs, (x, w_x, w_h, h0, lens, hs, hs if leak == 1.0 else ss)


def _elman_bwd(masked, leak, res, d_hs):
    x, w_x, w_h, h0, lens, hs, ss = res
    out = _call(
        "jaxrnn_elman_backward", {"dz": hs.shape, "dh0": h0.shape},
        w_h=w_h, ss=ss, d_hs=d_hs.astype(_f32), lengths=_lens_arg(lens if masked else None),
        masked=masked, leak=leak,
    )
    dz, dh0 = out["dz"], out["dh0"]
    dx, dw_x, db = _input_grads(x, w_x, dz)
    dw_h = _prev_outer(h0, hs, dz)
    return dx, dw_x, db, dw_h, dh0, None


_elman.defvjp(_elman_fwd, _elman_bwd)


def elman_sequence(x, w_x, b, w_h, h0, lengths=None, *, leak: float = 1.0):
    """``h_t = (1 - leak) h_{t-1} + leak * tanh(x_t W_x + b + h_{t-1} W_h)`` over all steps:
    returns ``hs (T, B, H)``. ``leak = 1`` is the Elman net (and the fully recurrent net)."""
    return _elman(x, w_x, b, w_h, h0, _lens_arg(lengths), lengths is not None, float(leak))


# ----------------------------------------------------------------------------- Jordan

def _jordan_forward(x, w_x, b, w_yh, w_y, b_y, y0, lens, training):
    T, B, _ = x.shape
    H, O = w_x.shape[-1], y0.shape[-1]
    out = _call("jaxrnn_jordan_forward", {"ys": (T, B, O), "hs": (T, B, H) if training else (1,)},
                x=x, w_x=w_x, bias=b, w_yh=w_yh, w_y=w_y, b_y=b_y, y0=y0,
                lengths=_lens_arg(lens), masked=lens is not None, training=training)
    return out["ys"], out["hs"]


@partial(jax.custom_vjp, nondiff_argnums=(8,))
def _jordan(x, w_x, b, w_yh, w_y, b_y, y0, lens, masked):
    ys, _ = _jordan_forward(x, w_x, b, w_yh, w_y, b_y, y0, lens if masked else None, False)
    return ys


def _jordan_fwd(x, w_x, b, w_yh, w_y, b_y, y0, lens, masked):
    ys, hs = _jordan_forward(x, w_x, b, w_yh, w_y, b_y, y0, lens if masked else None, True)
    return ys, (x, w_x, w_yh, w_y, y0, lens, hs, ys)


def _jordan_bwd(masked, res, d_ys):
    x, w_x, w_yh, w_y, y0, lens, hs, ys = res
    out = _call(
        "jaxrnn_jordan_backward", {"dz1": hs.shape, "dz2": ys.shape, "dy0": y0.shape},
        w_yh=w_yh, w_y=w_y, hs=hs, ys=ys, d_ys=d_ys.astype(_f32),
        lengths=_lens_arg(lens if masked else None), masked=masked,
    )
    dz1, dz2, dy0 = out["dz1"], out["dz2"], out["dy0"]
    dx, dw_x, db = _input_grads(x, w_x, dz1)
    dw_yh = _prev_outer(y0, ys, dz1)  # sum_t y_{t-1}^T dz1_t
    dw_y = _steps_outer(hs, dz2)  # sum_t h_t^T dz2_t
    return dx, dw_x, db, dw_yh, dw_y, _column_sums(_rows(dz2)), dy0, None


_jordan.defvjp(_jordan_fwd, _jordan_bwd)


def jordan_sequence(x, w_x, b, w_yh, w_y, b_y, y0, lengths=None):
    """The Jordan net over all steps, ``h_t = tanh(x_t W_x + b + y_{t-1} W_yh)``,
    ``y_t = tanh(h_t W_y + b_y)``: returns ``ys (T, B, O)``, the carries (frozen past a row's
    length)."""
    return _jordan(x, w_x, b, w_yh, w_y, b_y, y0, _lens_arg(lengths), lengths is not None)


# ----------------------------------------------------------------------------- minGRU / minLSTM

_MIN_KINDS = {"min_gru": 0, "min_lstm": 1}


def _min_project(x, w_x, b):
    return _rows_times(_rows(x), w_x, b).reshape(x.shape[:-1] + (w_x.shape[1],))


def _min_forward(xp, h0, lens, kind):
    return _call("jaxrnn_min_forward", {"hs": (xp.shape[0], xp.shape[1], h0.shape[-1])},
                 xp=xp, h0=h0, lengths=_lens_arg(lens), kind=kind, masked=lens is not None)["hs"]


@partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _minimal(x, w_x, b, h0, lens, kind, masked):
    return _min_forward(_min_project(x, w_x, b), h0, lens if masked else None, kind)


def _minimal_fwd(x, w_x, b, h0, lens, kind, masked):
    xp = _min_project(x, w_x, b)
    hs = _min_forward(xp, h0, lens if masked else None, kind)
    return hs, (x, w_x, xp, hs, h0, lens)


def _minimal_bwd(kind, masked, res, d_hs):
    x, w_x, xp, hs, h0, lens = res
    # The coefficients are recomputed from xp, whose buffer then takes d xp step by step; the
    # weight gradient is the in-kernel product over all steps (as for the other cells: XLA's
    # own product copied the (T, B, kH) cotangents, and at config A that pushed minLSTM's
    # training step past glibc's 32 MiB mmap ceiling, NOTES.md lever 13).
    out = _call("jaxrnn_min_backward", {"dxp": xp.shape, "dh0": h0.shape},
                xp=xp, hs=hs, h0=h0, d_hs=d_hs.astype(_f32),
                lengths=_lens_arg(lens if masked else None), kind=kind, masked=masked,
                aliases={"xp": "dxp"})
    dxp, dh0 = out["dxp"], out["dh0"]
    dx, dw_x, db = _input_grads(x, w_x, dxp)
    return dx, dw_x, db, dh0, None


_minimal.defvjp(_minimal_fwd, _minimal_bwd)


def minimal_sequence(name, x, w_x, b, h0, lengths=None):
    """minGRU (``name="min_gru"``, projection blocks ``(z, h~)``) or minLSTM (``"min_lstm"``,
    blocks ``(f, i, h~)``) over all steps, ``xp = x W_x + b``: returns ``hs (T, B, H)``, frozen
    past each row's length (:mod:`jaxrnn.cells.minimal`)."""
    return _minimal(x, w_x, b, h0, _lens_arg(lengths), _MIN_KINDS[name], lengths is not None)


__all__ = [
    "elman_sequence",
    "minimal_sequence",
    "gru_sequence",
    "jordan_sequence",
    "lstm_sequence",
]
