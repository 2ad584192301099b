"""The cell protocol shared by every recurrent family, and the helpers cells use to build it.

Shape legend used throughout the docstrings:
  ``B...`` any leading batch shape (possibly empty), ``T`` time, ``F`` input features,
  ``H`` hidden units, ``G`` width of a fused gate block (``k * H`` for ``k`` gates), ``O`` outputs.

A cell is a :class:`Cell`: a NamedTuple of pure functions made by a lowercase factory, in the
manner of ``optax.GradientTransformation``. Nothing is hidden in objects; parameters and carries
are named pytrees. The split into ``project`` (input-only part) and ``step`` (recurrent part) lets
the scan engine decide, by measurement, whether the input projection is computed per step inside
the loop or for the whole sequence before it.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any


class CellOptions(Mapping):
    """A cell's configuration as a frozen, hashable mapping of plain static values.

    ``CellOptions(activation="tanh", peephole=False, compute_dtype=None)``; read like a dict
    (``options["activation"]``, ``options.get("leak", 1.0)``). Frozen and hashable so that a
    :class:`Cell` stays hashable (it may be a static argument of ``jax.jit``). Activations are
    kept as the user gave them (a name or a callable).
    """

    __slots__ = ("_items",)

    def __init__(self, **items: Any):
        object.__setattr__(self, "_items", dict(items))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        try:
            return hash(tuple(sorted(self._items.items())))
        except TypeError:  # an unhashable value (say, a list): fall back to the text form
            return hash(repr(self))

    def __setattr__(self, name, value):
        raise AttributeError("CellOptions is frozen")

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._items.items())
        return f"CellOptions({inner})"


NO_OPTIONS = CellOptions()


class Cell(NamedTuple):
    """A recurrent cell as pure functions.

    Attributes:
      init: ``init(key, input_size) -> params``, a plain pytree of arrays.
      initial_carry: ``initial_carry(params, batch_shape) -> carry`` (zeros).
      project: ``project(params, x) -> xp``, the input-only part of the update; maps
        ``(..., F) -> (..., G)`` for any leading shape, so it may be applied to one step or to a
        whole sequence at once.
      step: ``step(params, carry, xp_t) -> (carry, y_t)``, the recurrent part, applied to one step.
        All leading dimensions of ``xp_t`` are batch.
      hidden_size: number of recurrent units ``H``.
      output_size: size of ``y_t``.
      name: family name, used in error messages and reports.
      input_size: ``input_size(params) -> F`` reads the expected feature size from the params.
      recurrent_key: name of the carry field that feeds the recurrence (``"h"`` for most cells,
        ``"y"`` for Jordan); variational recurrent dropout masks this field.
      parts: optional :class:`StepParts`, the same ``step`` written as one recurrent product plus
        an update without recurrent products; it lets the engine use its fused backends
        (:mod:`jaxrnn.engine.backends`). ``None`` (the default) always gives the plain scan.
      options: the factory's configuration as static data (:class:`CellOptions`, e.g.
        ``activation``, ``peephole``, ``compute_dtype``), read by the engine's backends to decide
        whether they compute exactly this cell. Cells know nothing of backends; a backend
        registers the families (``name``) it accelerates and reads their options. One key has a
        meaning for the engine itself: ``extra_inputs``, the number of input features the cell
        reads beyond the ``input_size`` its ``init`` is given (the reservoir's output feedback).
    """

    init: Callable[..., PyTree]
    initial_carry: Callable[..., PyTree]
    project: Callable[[PyTree, Array], Array]
    step: Callable[[PyTree, PyTree, Array], tuple[PyTree, Array]]
    hidden_size: int
    output_size: int
    name: str
    input_size: Callable[[PyTree], int]
    recurrent_key: str = "h"
    parts: StepParts | None = None
    options: CellOptions = NO_OPTIONS


class StepParts(NamedTuple):
    """A cell's ``step`` split into its recurrent product and the rest, for the fused engine.

    ``step(params, carry, xp) == update(params, carry, xp, recurrent_product(params, r))`` with
    ``r = getattr(carry, recurrent_key)``. ``recurrent_product(params, r) -> hp`` must be linear
    in ``r`` (``r @ W_h``, plus a constant bias), ``(B..., R) -> (B..., G')``; ``update(params,
    carry, xp, hp) -> (carry, y)`` holds everything else. ``step`` is the step built from the two
    (see :func:`compose_step`): the engine uses the parts only while ``cell.step is parts.step``,
    so a cell whose ``step`` was replaced (e.g. by a recurrent-dropout wrapper) falls back to
    the plain scan.
    """

    recurrent_product: Callable[[PyTree, Array], Array]
    update: Callable[[PyTree, PyTree, Array, Array], tuple[PyTree, Array]]
    step: Callable[[PyTree, PyTree, Array], tuple[PyTree, Array]]
    additive: bool = False  # update reads xp and hp only through xp + hp (LSTM, Elman, ...)


def compose_step(recurrent_product, update, recurrent_key: str = "h", *, additive=False):
    """Build ``step`` from a recurrent product and an update; returns ``(step, parts)`` for the
    ``Cell(step=step, parts=parts)`` fields. ``additive=True`` promises that ``update`` uses
    ``xp`` and ``hp`` only through their sum (so the engine keeps one pre-activation per step)."""

    def step(params, carry, xp):
        return update(params, carry, xp, recurrent_product(params, getattr(carry, recurrent_key)))

    return step, StepParts(recurrent_product, update, step, bool(additive))




# --------------------------------------------------------------------------- activations

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "identity": lambda x: x,
    "linear": lambda x: x,
    "softmax": jax.nn.softmax,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "gelu": jax.nn.gelu,
}


def resolve_activation(activation: str | Callable[[Array], Array], argname: str):
    """Turn an activation given by name or as a callable into a callable."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in _ACTIVATIONS:
        return _ACTIVATIONS[activation]
    raise ValueError(
        f"{argname}: unknown activation {activation!r}; expected a callable or one of "
        f"{sorted(_ACTIVATIONS)}"
    )


def check_positive_int(value, argname: str) -> int:
    # numbers.Integral also admits NumPy ints (e.g. a size read off an array's shape)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{argname}: expected a positive int, got {value!r}")
    return int(value)


def check_bool(value, argname: str) -> bool:
    """``value`` itself must be a bool: ``peephole="no"`` is truthy and would turn the option
    on."""
    if not isinstance(value, bool):
        raise TypeError(f"{argname}: expected a bool (True or False), got "
                        f"{type(value).__name__} {value!r}")
    return value


def check_float(value, argname: str) -> float:
    """A finite real number (ints and NumPy scalars too, not bools, strings or arrays)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(float(value))):
        raise TypeError(f"{argname}: expected a finite float, got {type(value).__name__} "
                        f"{value!r}")
    return float(value)


def check_dtype(value, argname: str, *, allow_none: bool = True):
    """A floating dtype given as a dtype, a scalar type or a name (``"bfloat16"``, as a JSON
    config spells it); ``None`` where allowed. Returns the ``jnp.dtype`` (or None)."""
    if value is None and allow_none:
        return None
    try:
        dtype = jnp.dtype(value)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        expected = "None or a floating dtype" if allow_none else "a floating dtype"
        raise TypeError(f"{argname}: expected {expected} (e.g. 'bfloat16', jnp.float32), got "
                        f"{value!r}")
    return dtype


def check_key(key, argname: str = "key"):
    """A PRNG key: a typed key (``jax.random.key``) or a legacy ``uint32 (2,)`` one
    (``jax.random.PRNGKey``); tracers of either kind pass (``init`` under ``jit``)."""
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", (None,)))
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ()
    legacy = dtype == jnp.uint32 and shape == (2,)
    if not (typed or legacy):
        what = (f"an array of dtype {dtype} and shape {shape}" if dtype is not None
                else f"{type(key).__name__} {key!r}")
        raise TypeError(f"{argname}: expected a PRNG key (jax.random.key(0)), got {what}")
    return key


def check_init_args(key, input_size, argname: str = "input_size") -> int:
    """The arguments of every ``init(key, input_size)``: a PRNG key and a positive size."""
    check_key(key)
    return check_positive_int(input_size, argname)


# --------------------------------------------------------------------------- initialisers

def glorot_blocks(key, fan_in: int, hidden: int, blocks: int, dtype=jnp.float32) -> Array:
    """Glorot-uniform weights ``(fan_in, blocks * hidden)``, each gate block drawn on its own
    ``(fan_in, hidden)`` fan, so fusing gates does not shrink each gate's initial scale."""
    keys = jax.random.split(key, blocks)
    init = jax.nn.initializers.glorot_uniform()
    return jnp.concatenate([init(k, (fan_in, hidden), dtype) for k in keys], axis=-1)


def orthogonal_blocks(key, hidden: int, blocks: int, dtype=jnp.float32, rows: int | None = None):
    """Orthogonal recurrent weights ``(rows, blocks * hidden)``, one orthogonal matrix per gate."""
    rows = hidden if rows is None else rows
    keys = jax.random.split(key, blocks)
    init = jax.nn.initializers.orthogonal()
    return jnp.concatenate([init(k, (rows, hidden), dtype) for k in keys], axis=-1)


def zeros_carry(batch_shape, size: int, dtype) -> Array:
    return jnp.zeros((*tuple(batch_shape), size), dtype)


def check_batch_shape(batch_shape, argname: str = "batch_shape") -> tuple[int, ...]:
    if isinstance(batch_shape, int):
        batch_shape = (batch_shape,)
    try:
        # operator.index takes ints and NumPy ints only: int() would truncate 2.5 and a string
        # would be read character by character
        if isinstance(batch_shape, str):
            raise TypeError
        shape = tuple(operator.index(d) for d in batch_shape)
    except TypeError:
        raise TypeError(
            f"{argname}: expected a tuple of ints (may be empty), got {batch_shape!r}"
        ) from None
    if any(d < 0 for d in shape):
        raise ValueError(f"{argname}: dimensions must be >= 0, got {shape}")
    return shape


def matmul(x: Array, w: Array, compute_dtype=None) -> Array:
    """``x @ w``; with ``compute_dtype`` (e.g. ``jnp.bfloat16``) the operands are cast down and the
    product accumulates in float32, so parameters and carries stay float32 (mixed precision)."""
    if compute_dtype is None:
        return x @ w
    return jnp.matmul(
        x.astype(compute_dtype), w.astype(compute_dtype), preferred_element_type=jnp.float32
    )
