"""Everything :func:`jaxrnn.run` checks before tracing, and the layout around a backend.

:func:`validate_inputs` checks each argument against the cell, naming the argument and the
expected and received value. :func:`check_params` compares the params with what the cell's own
``init`` makes (tree structure and leaf shapes from :func:`jax.eval_shape`, cached per cell and
input size), so params of another family, of another size, a dict or ``None`` fail here with one
clear message instead of deep inside JAX or, worse, inside a kernel reading past a buffer.
:func:`prepare` turns a validated call into a time-major :class:`~jaxrnn.engine.plan.Plan`;
:func:`finish` undoes reversal and layout on a backend's outputs.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells.base import Array, Cell, PyTree
from jaxrnn.engine import masking
from jaxrnn.engine.plan import Plan


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _shape_str(tree) -> str:
    return str(jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), tree))


# --------------------------------------------------------------------------- params


@functools.lru_cache(maxsize=1)
def _init_key():
    return jax.random.key(0)


def _eval_init(cell: Cell, input_size: int):
    """``(shapes, None)`` of ``cell.init(key, input_size)``, or ``(None, error)``."""
    try:
        return jax.eval_shape(lambda k: cell.init(k, input_size), _init_key()), None
    except Exception as err:  # the cell cannot make params of this input size
        return None, err


# A cell is a NamedTuple of functions and static values, hashable: cached per (cell, size),
# so tracing the same run again (another batch shape, a new jit) does not trace init again.
# Bounded: a cell made inside a traced function (a closure over its tracers) is not kept long.
_eval_init_cached = functools.lru_cache(maxsize=128)(_eval_init)


def expected_params(cell: Cell, input_size: int):
    """Shapes and dtypes (``jax.ShapeDtypeStruct`` leaves) of ``cell.init(key, input_size)``;
    raises what ``init`` raises."""
    try:
        shapes, err = _eval_init_cached(cell, input_size)
    except TypeError:  # an unhashable cell (a field that is a list, say): no cache
        shapes, err = _eval_init(cell, input_size)
    if err is not None:
        raise err
    return shapes


def _describe(tree) -> str:
    """``GRUParams(w_x, w_h, b, b_h)``, ``dict with keys [...]``, ``None``, ``ndarray``..."""
    if tree is None:
        return "None"
    fields = getattr(type(tree), "_fields", None)
    if fields is not None:
        present = [f for f in fields if getattr(tree, f) is not None]
        return f"{type(tree).__name__}({', '.join(present)})"
    if isinstance(tree, dict):
        return f"dict with keys {sorted(map(str, tree))}"
    if isinstance(tree, (list, tuple)):
        return f"{type(tree).__name__} of {len(tree)}"
    return type(tree).__name__


def _cell_str(cell: Cell) -> str:
    size = f"hidden {cell.hidden_size}"
    if cell.output_size != cell.hidden_size:
        size += f", output {cell.output_size}"
    return f"cell {cell.name!r} ({size})"


def _leaf_name(path) -> str:
    return jax.tree_util.keystr(path).lstrip(".") or "<root>"


def check_params(cell: Cell, params: PyTree) -> int:
    """Check ``params`` against ``cell.init`` before tracing; return the input size ``F``.

    The expected params are those of ``cell.init(key, F)`` with ``F`` read from the params
    (``cell.input_size``, less ``options["extra_inputs"]``): same tree structure (a ``None``
    field, e.g. an LSTM without peepholes, must be ``None``) and same leaf shapes. Dtypes are
    not checked (params may be cast, e.g. to bfloat16). A cell whose ``init`` cannot make params
    at that size (a wrapper that reads its inputs from the carry) is checked for structure only.

    Raises:
      TypeError: ``params`` is not the cell's params type at all (``None``, a dict, another
        family's params), or its structure differs.
      ValueError: a leaf has the wrong shape (another hidden size, another input layout).
    """
    try:
        feat = operator.index(cell.input_size(params))
    except Exception:  # None, a dict, another family's NamedTuple: input_size cannot read them
        feat = None
    probe = None
    if feat is not None and feat >= 0:
        try:
            probe = expected_params(cell, feat - int(cell.options.get("extra_inputs", 0)))
        except Exception:
            probe = None
    shapes_known = probe is not None
    if probe is None:
        try:  # any size at all: for the structure and the message
            probe = expected_params(cell, 1)
        except Exception:
            probe = None
    expected_name = "params of its init" if probe is None else _describe(probe)
    if feat is None or feat < 0:
        raise TypeError(
            f"params: expected {expected_name} for {_cell_str(cell)}, got {_describe(params)}"
        )
    if probe is None:
        return feat  # nothing to compare with: the cell cannot describe its params
    exp_def = jax.tree_util.tree_structure(probe)
    got_def = jax.tree_util.tree_structure(params)
    if exp_def != got_def:
        got_name = _describe(params)
        detail = f" (structure {got_def}, expected {exp_def})" if got_name == expected_name else ""
        raise TypeError(
            f"params: expected {expected_name} for {_cell_str(cell)}, got {got_name}{detail}"
        )
    if shapes_known:
        exp_leaves = jax.tree_util.tree_flatten_with_path(probe)[0]
        got_leaves = jax.tree_util.tree_leaves(params)
        bad = [(_leaf_name(path), tuple(e.shape), tuple(np.shape(g)))
               for (path, e), g in zip(exp_leaves, got_leaves, strict=True)
               if tuple(np.shape(g)) != tuple(e.shape)]
        if bad:
            want = ", ".join(f"{n} {e}" for n, e, _ in bad)
            got = ", ".join(f"{n} {g}" for n, _, g in bad)
            raise ValueError(
                f"params: expected {type(probe).__name__} for {_cell_str(cell)}: {want}, "
                f"got {got}"
            )
    return feat


# --------------------------------------------------------------------------- inputs


def validate_inputs(cell: Cell, params: PyTree, xs, carry, lengths, time_major: bool):
    """Check every argument of :func:`jaxrnn.run` before anything is traced; return the batch
    shape and sequence length. Errors name the argument and the expected and received value."""
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a jaxrnn Cell (e.g. jaxrnn.lstm(64)), got {type(cell)}")
    if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
        raise TypeError(f"xs: expected an array, got {type(xs).__name__}")
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(
            f"xs: expected a floating-point array (cast token ids through an embedding first), "
            f"got dtype {xs.dtype}"
        )
    if xs.ndim < 2:
        raise ValueError(
            f"xs: expected rank >= 2 ({'(T, B..., F)' if time_major else '(B..., T, F)'}), "
            f"got shape {tuple(xs.shape)}"
        )
    feat = check_params(cell, params)
    if xs.shape[-1] != feat:
        raise ValueError(
            f"xs: last dimension must equal the cell's input size {feat} (from params), "
            f"got shape {tuple(xs.shape)}"
        )
    if time_major:
        T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    else:
        T, batch_shape = xs.shape[-2], tuple(xs.shape[:-2])

    if lengths is not None:
        if not hasattr(lengths, "shape"):
            lengths = np.asarray(lengths)
        if not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise TypeError(f"lengths: expected an integer array, got dtype {lengths.dtype}")
        if tuple(lengths.shape) != batch_shape:
            raise ValueError(
                f"lengths: expected shape {batch_shape} (the batch shape of xs), "
                f"got {tuple(lengths.shape)}"
            )
        if _is_concrete(lengths):
            lv = np.asarray(lengths)
            if lv.size and (lv.min() < 0 or lv.max() > T):
                raise ValueError(
                    f"lengths: values must lie in [0, T={T}], got min {lv.min()} max {lv.max()}"
                )

    if carry is not None:
        expected = jax.eval_shape(lambda p: cell.initial_carry(p, batch_shape), params)
        exp_def = jax.tree_util.tree_structure(expected)
        got_def = jax.tree_util.tree_structure(carry)
        if exp_def != got_def:
            raise ValueError(
                f"carry: expected structure {exp_def} for cell {cell.name!r}, got {got_def}"
            )
        leaves = jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(carry)
        for e, g in zip(*leaves, strict=True):
            if tuple(np.shape(g)) != tuple(e.shape):
                raise ValueError(
                    f"carry: expected shapes {_shape_str(expected)}, got {_shape_str(carry)}"
                )
            # an integer carry would silently truncate every step's state (the steps cast to it)
            g_dtype = jnp.result_type(g)
            if jnp.issubdtype(e.dtype, jnp.floating) and not jnp.issubdtype(g_dtype, jnp.floating):
                raise TypeError(
                    f"carry: expected floating-point leaves ({e.dtype}), got dtype {g_dtype}"
                )
    return batch_shape, T


def _check_options(unroll, remat, flags) -> int:
    """Validate ``unroll``, ``remat`` and the bool flags; return the remat chunk size."""
    if not isinstance(unroll, (int, bool)) or int(unroll) < 1:
        raise ValueError(f"unroll: expected an int >= 1, got {unroll!r}")
    if isinstance(remat, bool):
        chunk = 1 if remat else 0
    elif isinstance(remat, int) and remat >= 1:
        chunk = remat
    else:
        raise ValueError(f"remat: expected a bool or an int >= 1 (chunk size), got {remat!r}")
    for name, flag in flags.items():
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name}: expected a bool, got {flag!r}")
    return chunk


def prepare(cell: Cell, params: PyTree, xs: Array, *, carry=None, lengths=None, reverse=False,
            time_major=False, unroll=1, remat=False, hoist_projection=False,
            fused_gradient=True) -> Plan:
    """Validate a call of :func:`jaxrnn.run` and lay it out time-major (reversed per sequence
    for ``reverse``) for a backend."""
    batch_shape, _ = validate_inputs(cell, params, xs, carry, lengths, time_major)
    chunk = _check_options(unroll, remat, {
        "reverse": reverse, "time_major": time_major, "hoist_projection": hoist_projection,
        "fused_gradient": fused_gradient,
    })
    if lengths is not None:
        lengths = jnp.asarray(lengths)
    if carry is None:
        carry = cell.initial_carry(params, batch_shape)
    # Time-major inside the engine: the backends slice along axis 0.
    xs_t = xs if time_major else jnp.moveaxis(xs, -2, 0)
    if reverse:
        xs_t = masking.reverse_padded(xs_t, lengths)
    return Plan(cell, params, carry, xs_t, lengths, batch_shape, int(unroll), chunk,
                bool(hoist_projection), bool(fused_gradient), bool(reverse), bool(time_major))


def finish(plan: Plan, ys: Array) -> Array:
    """A backend's time-major outputs in the caller's order and layout."""
    if plan.reverse:
        # lengths past T (possible under jit, where they are not checked) end at T
        lengths = None if plan.lengths is None else jnp.minimum(plan.lengths, plan.T)
        ys = masking.reverse_padded(ys, lengths)
    if not plan.time_major:
        ys = jnp.moveaxis(ys, 0, -2)
    return ys


__all__ = ["check_params", "expected_params", "finish", "prepare", "validate_inputs"]
