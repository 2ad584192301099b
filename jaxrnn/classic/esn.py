r"""Echo state networks (Jaeger 2001; Jaeger & Haas 2004): a fixed random reservoir run by the
common scan engine, a readout solved in closed form, and closed-loop generation.

Reservoir (a :class:`~jaxrnn.Cell`, so :func:`jaxrnn.run` drives it like any other cell):

.. math::
   x_t = (1-a)\,x_{t-1} + a \tanh\!\big(u_t W_{in} + y_{t-1} W_{fb} + x_{t-1} W + b\big)

with leak rate :math:`a`, a sparse recurrent matrix :math:`W` (fraction ``density`` of entries
non-zero) rescaled so that its spectral radius -- computed from its eigenvalues, not assumed -- is
``spectral_radius``, input weights :math:`W_{in} \sim U(-s_{in}, s_{in})`, optional output
feedback :math:`W_{fb} \sim U(-s_{fb}, s_{fb})` and bias :math:`b \sim U(-s_b, s_b)`.

With output feedback the cell's input is the concatenation ``[u_t, y_{t-1}]`` (``F + O``
features): while training, ``y_{t-1}`` is the previous *target* (teacher forcing); in
:func:`generate` it is the network's own previous output.

Readout (ridge regression, one linear solve, no gradient descent): with the design matrix
:math:`\Phi` whose rows are :math:`[x_t, u_t, 1]` (``u_t`` only with ``include_input``) for the
steps after the washout and targets :math:`Y`,

.. math::
   W_{out} = (\Phi^\top \Phi + \lambda D)^{-1} \Phi^\top Y, \qquad D = \mathrm{diag}(1,\dots,1,0)

(the bias column is not penalised). Prediction is :math:`\hat y_t = [x_t, u_t, 1] W_{out}`.

Shapes: ``B...`` batch (possibly empty), ``T`` time, ``F`` drive inputs, ``H`` reservoir units,
``O`` outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells.base import (
    Array,
    Cell,
    CellOptions,
    check_batch_shape,
    check_dtype,
    check_init_args,
    check_positive_int,
    compose_step,
    matmul,
    resolve_activation,
)
from jaxrnn.engine import run


class ReservoirParams(NamedTuple):
    w_in: Array  # (F, H) input weights
    w: Array  # (H, H) recurrent weights, spectral radius rescaled
    b: Array  # (H,) bias
    w_fb: Array | None = None  # (O, H) output-feedback weights; None without feedback


class ReservoirState(NamedTuple):
    h: Array  # (B..., H) reservoir state x_t


class Readout(NamedTuple):
    w: Array  # (D, O) with D = H (+ F with include_input)
    b: Array  # (O,)


def _check_float(
    value, argname: str, *, low: float, high: float | None = None, low_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argname}: expected a float, got {type(value).__name__} {value!r}")
    v = float(value)
    bad_low = v <= low if low_open else v < low
    if bad_low or (high is not None and v > high) or not np.isfinite(v):
        rng = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}]"
        raise ValueError(f"{argname}: expected a value in {rng}, got {value!r}")
    return v


def _spectral_radius_host(w: np.ndarray) -> np.ndarray:
    """Largest eigenvalue modulus, in float64 on the host (works on every backend)."""
    return np.asarray(np.max(np.abs(np.linalg.eigvals(np.asarray(w, np.float64)))), np.float32)


def _radius(w: Array) -> Array:
    return jax.pure_callback(
        _spectral_radius_host,
        jax.ShapeDtypeStruct((), jnp.float32),
        w,
        vmap_method="sequential",
    )


def spectral_radius(w: Array) -> Array:
    """The spectral radius ``max |eig(w)|`` of a square matrix, computed in float64 on the host
    through :func:`jax.pure_callback`, so it also works under ``jit`` and on GPU."""
    if not hasattr(w, "ndim") or w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"w: expected a square matrix (H, H), got shape {tuple(np.shape(w))}")
    return _radius(jnp.asarray(w))


def reservoir(
    hidden_size: int,
    *,
    density: float = 0.1,
    spectral_radius: float = 0.9,
    input_scaling: float = 1.0,
    leak_rate: float = 1.0,
    bias_scaling: float = 0.0,
    feedback_size: int = 0,
    feedback_scaling: float = 1.0,
    activation="tanh",
    compute_dtype=None,
) -> Cell:
    """An echo-state reservoir cell.

    Args:
      hidden_size: number of reservoir units ``H``.
      density: fraction of non-zero entries of ``W``, in ``(0, 1]``.
      spectral_radius: target spectral radius of ``W``; < 1 is the usual sufficient-in-practice
        condition for the echo-state property.
      input_scaling: ``s_in``; input weights are ``U(-s_in, s_in)``.
      leak_rate: ``a`` in ``(0, 1]``; 1 is the non-leaky reservoir.
      bias_scaling: ``s_b``; 0 gives no bias.
      feedback_size: ``O``; with ``O > 0`` the cell expects inputs ``[u_t, y_{t-1}]`` of
        ``F + O`` features and has feedback weights ``W_fb`` of shape ``(O, H)``.
      feedback_scaling: ``s_fb``.
      activation: the reservoir nonlinearity (``tanh``).
      compute_dtype: e.g. ``jnp.bfloat16`` for the products (float32 accumulation); weights
        and state stay float32.

    Returns:
      A :class:`~jaxrnn.Cell` named ``"reservoir"``; ``y_t = x_t`` with ``output_size == H``.
      ``init(key, input_size)`` takes the number of drive inputs ``F`` (without feedback).

    Example:
      >>> cell = reservoir(100, spectral_radius=0.9, density=0.1)
      >>> params = cell.init(jax.random.key(0), 1)
      >>> carry, states = jaxrnn.run(cell, params, jnp.ones((50, 1)))   # states: (50, 100)
    """
    H = check_positive_int(hidden_size, "hidden_size")
    dens = _check_float(density, "density", low=0.0, high=1.0, low_open=True)
    rho = _check_float(spectral_radius, "spectral_radius", low=0.0, low_open=True)
    s_in = _check_float(input_scaling, "input_scaling", low=0.0)
    a = _check_float(leak_rate, "leak_rate", low=0.0, high=1.0, low_open=True)
    s_b = _check_float(bias_scaling, "bias_scaling", low=0.0)
    s_fb = _check_float(feedback_scaling, "feedback_scaling", low=0.0)
    if isinstance(feedback_size, bool) or not isinstance(feedback_size, int) or feedback_size < 0:
        raise ValueError(f"feedback_size: expected an int >= 0, got {feedback_size!r}")
    O_fb = feedback_size
    act = resolve_activation(activation, "activation")
    compute_dtype = check_dtype(compute_dtype, "compute_dtype")

    def init(key, input_size: int) -> ReservoirParams:
        F = check_init_args(key, input_size)
        k_w, k_mask, k_in, k_b, k_fb = jax.random.split(key, 5)
        raw = jax.random.uniform(k_w, (H, H), jnp.float32, -1.0, 1.0)
        raw = jnp.where(jax.random.uniform(k_mask, (H, H)) < dens, raw, 0.0)
        # Why computed: the radius of a sparse random matrix is only known asymptotically
        # (circular law); small reservoirs deviate by tens of percent.
        current = _radius(raw)
        if not isinstance(current, jax.core.Tracer) and float(current) == 0.0:
            raise ValueError(
                f"density: the random reservoir matrix ({H}x{H}, density {dens}) has spectral "
                f"radius 0 and cannot be rescaled; use a larger density or hidden_size"
            )
        w = raw * (rho / current)
        w_in = jax.random.uniform(k_in, (F, H), jnp.float32, -s_in, s_in)
        b = jax.random.uniform(k_b, (H,), jnp.float32, -s_b, s_b)
        w_fb = jax.random.uniform(k_fb, (O_fb, H), jnp.float32, -s_fb, s_fb) if O_fb else None
        return ReservoirParams(w_in=w_in, w=w, b=b, w_fb=w_fb)

    def initial_carry(params: ReservoirParams, batch_shape=()) -> ReservoirState:
        return ReservoirState(jnp.zeros((*check_batch_shape(batch_shape), H), params.w.dtype))

    def project(params: ReservoirParams, z: Array) -> Array:
        F = params.w_in.shape[0]
        xp = matmul(z[..., :F], params.w_in, compute_dtype) + params.b
        if params.w_fb is not None:
            xp = xp + matmul(z[..., F:], params.w_fb, compute_dtype)
        return xp

    def recurrent_product(params: ReservoirParams, h: Array) -> Array:
        return matmul(h, params.w, compute_dtype)

    def update(params: ReservoirParams, carry: ReservoirState, xp: Array, hp: Array):
        with jax.named_scope("reservoir_step"):
            x = ((1.0 - a) * carry.h + a * act(xp + hp)).astype(carry.h.dtype)
            return ReservoirState(x), x

    # the update uses the fixed reservoir weights only through xp + hp: additive
    step, parts = compose_step(recurrent_product, update, additive=True)

    def input_size(params: ReservoirParams) -> int:
        fb = 0 if params.w_fb is None else params.w_fb.shape[0]
        return params.w_in.shape[0] + fb

    return Cell(
        init=init,
        initial_carry=initial_carry,
        project=project,
        step=step,
        hidden_size=H,
        output_size=H,
        name="reservoir",
        input_size=input_size,
        parts=parts,
        # extra_inputs: the inputs carry [u_t, y_{t-1}], init is given the size of u_t only
        options=CellOptions(activation=activation, leak=a, extra_inputs=O_fb,
                            compute_dtype=compute_dtype),
    )


# --------------------------------------------------------------------------- helpers


def _as_float_array(x, argname: str, min_ndim: int) -> Array:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{argname}: expected an array, got {type(x).__name__}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{argname}: expected a floating-point array, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{argname}: expected rank >= {min_ndim}, got shape {tuple(x.shape)}")
    return jnp.asarray(x)


def drive(
    cell: Cell,
    params: ReservoirParams,
    inputs: Array,
    *,
    teacher: Array | None = None,
    carry: ReservoirState | None = None,
) -> tuple[ReservoirState, Array]:
    """Run the reservoir over ``inputs`` ``(B..., T, F)`` with :func:`jaxrnn.run`.

    With output feedback, ``teacher`` ``(B..., T, O)`` holds the targets ``y_t`` and the cell is
    fed ``[u_t, y_{t-1}]`` (teacher forcing), with ``y_{-1} = 0``.
    Returns ``(final_carry, states (B..., T, H))``.
    """
    inputs = _as_float_array(inputs, "inputs", 2)
    has_fb = params.w_fb is not None
    if has_fb:
        if teacher is None:
            raise ValueError(
                f"teacher: a reservoir with output feedback (O={params.w_fb.shape[0]}) needs the "
                f"teacher-forced outputs, got None"
            )
        teacher = _as_float_array(teacher, "teacher", 2)
        if teacher.shape[:-1] != inputs.shape[:-1] or teacher.shape[-1] != params.w_fb.shape[0]:
            raise ValueError(
                f"teacher: expected shape {(*inputs.shape[:-1], params.w_fb.shape[0])}, "
                f"got {tuple(teacher.shape)}"
            )
        previous = jnp.concatenate(
            [jnp.zeros_like(teacher[..., :1, :]), teacher[..., :-1, :]], axis=-2
        )
        inputs = jnp.concatenate([inputs, previous], axis=-1)
    elif teacher is not None:
        raise ValueError("teacher: only a reservoir with feedback_size > 0 takes a teacher signal")
    return run(cell, params, inputs, carry=carry)


def features(states: Array, inputs: Array | None) -> Array:
    """The readout's features ``[x_t, u_t]`` (or ``x_t`` alone when ``inputs`` is None)."""
    return states if inputs is None else jnp.concatenate([states, inputs], axis=-1)


def fit_readout(
    feats: Array,
    targets: Array,
    *,
    ridge: float = 1e-6,
    washout: int = 0,
    solver: str = "qr",
) -> Readout:
    """Ridge-regression readout in closed form (one linear solve of the normal equations).

    Args:
      feats: ``(B..., T, D)`` features, usually :func:`features` of the reservoir states.
      targets: ``(B..., T, O)``.
      ridge: ``lambda >= 0``; the bias is not penalised.
      washout: the first ``washout`` steps of every sequence are dropped (initial transient).
      solver: ``"qr"`` (default) solves the stacked least-squares system
        ``[Phi_c; sqrt(lambda) I] w = [Y_c; 0]`` by a QR factorisation and a triangular solve;
        ``"normal"`` solves ``(Phi_c^T Phi_c + lambda I) w = Phi_c^T Y_c`` directly. Both give the
        same minimiser; QR keeps about twice the significant digits in float32.

    Returns:
      :class:`Readout` with ``w (D, O)`` and ``b (O,)`` minimising
      ``|Phi [w; b] - Y|^2 + lambda |w|^2`` over all remaining steps of all sequences.
    """
    feats = _as_float_array(feats, "feats", 2)
    targets = _as_float_array(targets, "targets", 2)
    if feats.shape[:-1] != targets.shape[:-1]:
        raise ValueError(
            f"targets: expected leading shape {tuple(feats.shape[:-1])} (that of feats), "
            f"got shape {tuple(targets.shape)}"
        )
    lam = _check_float(ridge, "ridge", low=0.0)
    T = feats.shape[-2]
    if isinstance(washout, bool) or not isinstance(washout, int) or not 0 <= washout < T:
        raise ValueError(f"washout: expected an int in [0, T={T}), got {washout!r}")
    if solver not in ("qr", "normal"):
        raise ValueError(f"solver: expected 'qr' or 'normal', got {solver!r}")
    D, O = feats.shape[-1], targets.shape[-1]
    phi = feats[..., washout:, :].reshape(-1, D)
    y = targets[..., washout:, :].reshape(-1, O)
    # An unpenalised bias is the same as ridge on centred data with b = mean(y) - mean(phi) w;
    # centring also removes the large mean direction that makes the Gram matrix ill-conditioned.
    phi_mean, y_mean = jnp.mean(phi, axis=0), jnp.mean(y, axis=0)
    phi_c, y_c = phi - phi_mean, y - y_mean
    if solver == "normal":
        gram = phi_c.T @ phi_c + lam * jnp.eye(D, dtype=phi.dtype)
        w = jnp.linalg.solve(gram, phi_c.T @ y_c)
    else:
        # The same normal equations solved through a QR factorisation of the stacked system
        # [phi_c; sqrt(lam) I] w = [y_c; 0]: it never forms phi^T phi, so float32 keeps the
        # precision that squaring the condition number would lose.
        a = jnp.concatenate([phi_c, jnp.sqrt(lam) * jnp.eye(D, dtype=phi.dtype)], axis=0)
        rhs = jnp.concatenate([y_c, jnp.zeros((D, O), y.dtype)], axis=0)
        q, r = jnp.linalg.qr(a)
        w = jax.scipy.linalg.solve_triangular(r, q.T @ rhs, lower=False)
    return Readout(w=w, b=y_mean - phi_mean @ w)


def predict(readout: Readout, feats: Array) -> Array:
    """``y = feats @ w + b``, ``(..., D) -> (..., O)``."""
    if feats.shape[-1] != readout.w.shape[0]:
        raise ValueError(
            f"feats: last dimension must be {readout.w.shape[0]} (the readout's), "
            f"got shape {tuple(feats.shape)}"
        )
    return feats @ readout.w + readout.b


class GeneratorState(NamedTuple):
    reservoir: ReservoirState  # (B..., H)
    u: Array  # (B..., F) the input for the next step
    y: Array  # (B..., O) the last output (fed back through W_fb, if any)


def closed_loop(cell: Cell, readout: Readout, *, feed_input: bool, include_input: bool) -> Cell:
    """A :class:`~jaxrnn.Cell` that runs the trained ESN on its own predictions.

    Each step: ``x_t = reservoir(x_{t-1}, [u_t, y_{t-1}])``, ``y_t = [x_t, u_t] W_out + b``, and,
    with ``feed_input``, ``u_{t+1} = y_t`` (the prediction becomes the next input; needs
    ``O == F``); otherwise ``u`` stays as given in the carry. The external input is ignored; run
    it over ``xs`` of shape ``(B..., T, 0)``. Outputs are ``y_t``.
    """
    if not isinstance(cell, Cell) or cell.name != "reservoir":
        raise TypeError(f"cell: expected a reservoir Cell (jaxrnn.classic.reservoir), got {cell!r}")

    def initial_carry(params, batch_shape=()):
        shape = check_batch_shape(batch_shape)
        F, O = params.w_in.shape[0], readout.w.shape[1]
        return GeneratorState(
            cell.initial_carry(params, shape),
            jnp.zeros((*shape, F), params.w.dtype),
            jnp.zeros((*shape, O), params.w.dtype),
        )

    def step(params, carry: GeneratorState, _):
        z = carry.u if params.w_fb is None else jnp.concatenate([carry.u, carry.y], axis=-1)
        res, x = cell.step(params, carry.reservoir, cell.project(params, z))
        y = predict(readout, features(x, carry.u if include_input else None))
        u = y if feed_input else carry.u
        return GeneratorState(res, u, y), y

    return Cell(
        init=cell.init,
        initial_carry=initial_carry,
        project=lambda params, x: x,
        step=step,
        hidden_size=cell.hidden_size,
        output_size=int(readout.w.shape[1]),
        name="reservoir_closed_loop",
        input_size=lambda params: 0,
    )


def generate(
    cell: Cell,
    params: ReservoirParams,
    readout: Readout,
    carry: ReservoirState,
    u: Array,
    steps: int,
    *,
    y: Array | None = None,
    include_input: bool = True,
    feed_input: bool = True,
) -> Array:
    """Closed-loop generation: ``steps`` outputs ``(B..., steps, O)`` produced by feeding each
    prediction back as the next input (and as the feedback signal, if the reservoir has one).

    With ``feed_input=False`` the input stays ``u`` at every step and only the output-feedback
    path closes the loop (Jaeger's setting: a constant bias input and feedback ``W_fb``).

    Args:
      carry: the reservoir state after the teacher-forced (or input-driven) warm-up.
      u: ``(B..., F)`` the first input to feed (usually the last true value seen).
      y: ``(B..., O)`` the last output for the feedback path (default: ``u``; required when
        ``O != F``).
      include_input: whether the readout was fitted on ``[x_t, u_t]`` (True) or ``x_t``.
    """
    steps = check_positive_int(steps, "steps")
    u = _as_float_array(u, "u", 1)
    F = params.w_in.shape[0]
    O = readout.w.shape[1]
    if u.shape[-1] != F or u.shape[:-1] != carry.h.shape[:-1]:
        raise ValueError(
            f"u: expected shape {(*carry.h.shape[:-1], F)} (batch of carry, F inputs), "
            f"got {tuple(u.shape)}"
        )
    if feed_input and O != F:
        raise ValueError(
            f"readout: closed-loop generation feeds outputs back as inputs, so O must equal "
            f"F={F}; got O={O} (use feed_input=False for feedback-only generation)"
        )
    if y is None and O != F:
        raise ValueError(f"y: the last output ({O} features) is required when O != F={F}")
    if params.w_fb is not None and params.w_fb.shape[0] != O:
        raise ValueError(
            f"readout: the reservoir feeds back {params.w_fb.shape[0]} outputs, got a readout "
            f"with O={O}"
        )
    D_expected = cell.hidden_size + (F if include_input else 0)
    if readout.w.shape[0] != D_expected:
        raise ValueError(
            f"readout: expected w of shape ({D_expected}, {O}) for include_input={include_input}, "
            f"got {tuple(readout.w.shape)}"
        )
    y = u if y is None else jnp.asarray(y)
    loop = closed_loop(cell, readout, feed_input=feed_input, include_input=include_input)
    batch = tuple(carry.h.shape[:-1])
    xs = jnp.zeros((*batch, steps, 0), params.w.dtype)
    _, ys = run(loop, params, xs, carry=GeneratorState(carry, u, y))
    return ys


def nrmse(prediction: Array, target: Array, axis=None) -> Array:
    """Normalised root-mean-square error ``sqrt(mean((p - t)^2) / var(t))``."""
    err = jnp.mean((prediction - target) ** 2, axis=axis)
    return jnp.sqrt(err / jnp.var(target, axis=axis))


__all__ = [
    "reservoir",
    "ReservoirParams",
    "ReservoirState",
    "Readout",
    "GeneratorState",
    "spectral_radius",
    "drive",
    "features",
    "fit_readout",
    "predict",
    "closed_loop",
    "generate",
    "nrmse",
]
