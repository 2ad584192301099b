r"""The fused backend: a custom-VJP scan for cells that expose ``StepParts``.

For a cell whose step is ``update(params, carry, xp_t, hp_t)`` with ``xp_t = project(params, x_t)``
and ``hp_t = recurrent_product(params, r_{t-1})`` (``r`` the carry field ``cell.recurrent_key``,
``recurrent_product`` linear in ``r``), the gradient of a whole sequence is computed by a
:func:`jax.custom_vjp` in the way cuDNN and PyTorch do it, instead of by differentiating the
scan step by step:

1. forward: one scan that also stacks the residuals ``carry_{t-1}, xp_t, hp_t``;
2. backward: one reverse scan whose body holds only the update's VJP and one small product,
   ``dr_{t-1} = dhp_t W_h^T`` (the VJP of ``recurrent_product`` in ``r``); it emits
   ``d xp_t`` and ``d hp_t``, the cotangents of the pre-activations, for every step;
3. after it, the parameter gradients of all steps at once, each as one large product over
   ``T x B`` rows: ``dW_x = X^T dXP`` (VJP of ``project`` over the whole sequence),
   ``dW_h = R_{prev}^T dHP`` (VJP of ``recurrent_product`` over the whole sequence), and the
   update's own parameters (peepholes, biases) by the VJP of the update over all steps.

Autodiff through ``lax.scan`` instead accumulates ``dW`` inside the loop: a ``(H, G)`` product and
a ``(H, G)`` add per step, plus the bookkeeping of a larger loop body.

Padding (``lengths``) is honoured exactly as in the plain scan: the carry freezes past a
sequence's end and outputs there are zero; in the backward pass the cotangent of a frozen carry
passes through unchanged (:mod:`jaxrnn.engine.masking`). Reverse direction and layout are
handled by :func:`jaxrnn.run` around this function. Rematerialisation (``remat``) is not
supported here: ``impl="auto"`` takes the plain scan for it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Array, Cell, PyTree
from jaxrnn.engine import masking
from jaxrnn.engine.plan import Backend, Plan


def owns_step(cell: Cell) -> bool:
    """Whether ``cell`` exposes parts and its step is still theirs (not replaced by a wrapper,
    e.g. recurrent dropout): only then may a backend compute the cell from its parts, its family
    and its options instead of calling ``step``."""
    parts = getattr(cell, "parts", None)
    return parts is not None and parts.step is cell.step


def step_refusal(cell: Cell) -> str | None:
    """Why a backend that does not call ``cell.step`` may not stand in for it, or ``None``."""
    if getattr(cell, "parts", None) is None:
        return f"cell {cell.name!r} exposes no StepParts (its step is opaque to the engine)"
    if cell.parts.step is not cell.step:
        return (f"cell {cell.name!r} has a replaced step (e.g. recurrent dropout, "
                f"jaxrnn.with_recurrent_mask): only the plain scan calls it")
    return None


def sequence_kernel_refusal(plan, who: str) -> str | None:
    """Why a whole-sequence custom-VJP backend (``who``: "the kernel", "cuDNN") cannot take
    ``plan`` for reasons common to all of them, or ``None``: they keep every step's residuals,
    project the inputs themselves, have no forward mode and need a step that is the cell's own."""
    if not plan.fused_gradient:
        return "fused_gradient=False asks for the plain scan (a custom VJP has no forward mode)"
    if plan.chunk:
        return f"remat is set: {who} keeps every step's residuals (no rematerialisation)"
    if plan.hoist_projection:
        return f"hoist_projection=True: {who} projects the inputs itself"
    if plan.T == 0:
        return "the sequence is empty (T = 0)"
    return step_refusal(plan.cell)


def supported(cell: Cell) -> bool:
    """Whether ``cell`` can take the fused scan: it owns its step and splits it into a
    recurrent product and an update (cells linear in their state, minGRU/minLSTM, have no
    recurrent product: the associative backend or the kernel)."""
    return owns_step(cell) and cell.parts.recurrent_product is not None


def _uses_params(fn, params, *args) -> bool:
    """Whether ``fn(params, *args)`` reads any parameter leaf (decided from its jaxpr)."""
    closed = jax.make_jaxpr(lambda p: fn(p, *args))(params)
    invars = {id(v) for v in closed.jaxpr.invars}
    used = [v for eqn in closed.jaxpr.eqns for v in eqn.invars] + list(closed.jaxpr.outvars)
    return any(id(v) in invars for v in used)


def _add_trees(a, b):
    return jax.tree_util.tree_map(lambda x, y: x + y, a, b)


def _flat(a: Array) -> Array:
    return a.reshape(-1, a.shape[-1])


def _weight_gradients(project, rp, p, xs, r_prev, d_xps, d_hps):
    """The parameter gradients of ``project`` and ``recurrent_product`` summed over all steps,
    and the input gradient: VJPs of the two maps applied to every step at once, so each weight
    gradient is one large product (``X^T dXP``, ``R^T dHP``). Time and batch are flattened into
    one row axis first (the maps treat leading axes as batch): contracting a single axis gives
    XLA a plain ``A^T B`` product, where contracting ``(T, B...)`` made it transpose the
    ``(T, B, G)`` cotangents in memory before a slower generic product (measured 3x slower)."""
    _, vjp_proj = jax.vjp(project, p, _flat(xs))
    g_proj, d_xs = vjp_proj(_flat(d_xps))
    r2 = _flat(r_prev)
    _, vjp_rp = jax.vjp(lambda p_: rp(p_, r2), p)
    (g_rp,) = vjp_rp(_flat(d_hps))
    return g_proj, g_rp, d_xs.reshape(xs.shape)


def fused_scan(
    cell: Cell,
    params: PyTree,
    carry: PyTree,
    seq: Array,
    lengths: Array | None,
    *,
    projected: bool = False,
    unroll: int = 1,
) -> tuple[PyTree, Array]:
    """Run ``cell`` over the time-major ``seq`` ``(T, B..., F)`` with the fused gradient.

    Args:
      cell: a cell with :func:`supported` true.
      params, carry: as in :func:`jaxrnn.run` (``carry`` already initialised).
      seq: inputs ``x`` (``projected=False``: ``project`` runs per step inside the loop) or the
        precomputed projections ``xp`` (``projected=True``, for ``hoist_projection``).
      lengths: integer ``(B...)`` valid lengths, or ``None``.
      unroll: passed to both scans.

    Returns:
      ``(final_carry, ys)`` with ``ys`` time-major ``(T, B..., O)``.
    """
    parts = cell.parts
    rp, update, key = parts.recurrent_product, parts.update, cell.recurrent_key
    project = (lambda p, x: x) if projected else cell.project
    T = seq.shape[0]
    masked = lengths is not None

    additive = bool(getattr(parts, "additive", False))
    # Additive cells (the update reads only xp + hp) keep one pre-activation z per step and
    # emit one cotangent dz; the others keep and emit xp and hp separately.

    def one_step(p, c, x):
        xp = project(p, x)
        hp = rp(p, getattr(c, key))
        if additive:
            z = xp + hp
            new_c, y = update(p, c, z, jnp.zeros((), z.dtype))
            return new_c, y, (z,)
        new_c, y = update(p, c, xp, hp)
        return new_c, y, (xp, hp)

    def scan_forward(p, c0, xs, lens, keep_residuals):
        def body(c, inp):
            t, x = inp
            if keep_residuals:
                new_c, y, pre = one_step(p, c, x)
            else:
                new_c, y = update(p, c, project(p, x), rp(p, getattr(c, key)))
            if masked:
                valid = masking.step_valid(t, lens)
                new_c = masking.freeze(valid, new_c, c)
                y = masking.zero_invalid(valid, y)
            out = (y, c, pre) if keep_residuals else y
            return new_c, out

        return jax.lax.scan(body, c0, (jnp.arange(T), xs), unroll=unroll)

    @jax.custom_vjp
    def core(p, c0, xs, lens):
        return scan_forward(p, c0, xs, lens, keep_residuals=False)

    def core_fwd(p, c0, xs, lens):
        final, (ys, c_prev, pre) = scan_forward(p, c0, xs, lens, keep_residuals=True)
        return (final, ys), (p, xs, lens, c_prev, pre)

    def upd(p, c, pre):
        """The update as a function of the kept pre-activations."""
        if additive:
            (z,) = pre
            return update(p, c, z, jnp.zeros((), z.dtype))
        return update(p, c, *pre)

    def core_bwd(res, cts):
        p, xs, lens, c_prev, pre = res
        d_final, d_ys = cts
        # Does the update read parameters itself (peepholes, a readout)? Then its parameter
        # gradient is needed, taken after the loop from the per-step output cotangents.
        probe = jax.tree_util.tree_map(lambda a: a[0], (c_prev, pre))
        upd_params = _uses_params(upd, p, *probe)

        def body(dc, inp):
            t, c, pre_t, dy = inp
            _, vjp_u = jax.vjp(lambda c_, pre_: upd(p, c_, pre_), c, pre_t)
            dc_prev, d_pre = vjp_u((dc, dy))
            _, vjp_r = jax.vjp(lambda r: rp(p, r), getattr(c, key))
            (dr,) = vjp_r(d_pre[-1])  # dz (additive) or dhp
            dc_prev = dc_prev._replace(**{key: getattr(dc_prev, key) + dr})
            emitted = (dc, dy) if upd_params else None
            if masked:
                valid = masking.step_valid(t, lens)
                dc_prev = masking.freeze(valid, dc_prev, dc)
                d_pre = masking.zero_invalid(valid, d_pre)
                if upd_params:
                    emitted = masking.zero_invalid(valid, emitted)
            return dc_prev, (d_pre, emitted)

        d_c0, (d_pre, emitted) = jax.lax.scan(
            body, d_final, (jnp.arange(T), c_prev, pre, d_ys), reverse=True, unroll=unroll
        )
        d_xps, d_hps = d_pre[0], d_pre[-1]  # both dz for additive cells
        g_proj, g_rp, d_xs = _weight_gradients(project, rp, p, xs, getattr(c_prev, key),
                                               d_xps, d_hps)
        grads = _add_trees(g_proj, g_rp)
        if upd_params:
            _, vjp_up = jax.vjp(lambda p_: upd(p_, c_prev, pre), p)
            (g_up,) = vjp_up(emitted)
            grads = _add_trees(grads, g_up)
        return grads, d_c0, d_xs, None

    core.defvjp(core_fwd, core_bwd)
    lens = jnp.zeros((), jnp.int32) if lengths is None else lengths
    return core(params, carry, seq, lens)


def refuse(plan: Plan) -> str | None:
    if not plan.fused_gradient:
        return "fused_gradient=False asks for the plain scan (a custom VJP has no forward mode)"
    if plan.chunk:
        return "remat is set: the fused scan keeps every step's residuals (no rematerialisation)"
    if plan.T == 0:
        # nothing to fuse, and the backward pass reads the first step's residuals
        return "the sequence is empty (T = 0)"
    reason = step_refusal(plan.cell)
    if reason is not None:
        return reason
    if plan.cell.parts.recurrent_product is None:
        return (f"cell {plan.cell.name!r} has no recurrent product to split off (linear in its "
                f"state: see impl='associative' or impl='kernel')")
    return None


def run(plan: Plan) -> tuple[PyTree, Array]:
    seq = plan.cell.project(plan.params, plan.xs) if plan.hoist_projection else plan.xs
    # looked up at call time, so a benchmark may swap in a variant of fused_scan
    return fused_scan(plan.cell, plan.params, plan.carry, seq, plan.lengths,
                      projected=plan.hoist_projection, unroll=plan.unroll)


BACKEND = Backend(
    name="fused",
    refuse=refuse,
    run=run,
    summary="custom-VJP scan from the cell's StepParts (weight gradients as one product)",
)

__all__ = ["BACKEND", "fused_scan", "owns_step", "step_refusal", "supported"]
