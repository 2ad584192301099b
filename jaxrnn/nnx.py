"""Flax NNX front door: jaxrnn cells and layers as ``flax.nnx`` modules.

Each module holds the parameters of one jaxrnn cell (or one stack of layers) as ``nnx.Param``
variables laid out exactly like the cell's NamedTuple (``module.params.w_x`` is the ``w_x`` field
of :class:`jaxrnn.LSTMParams`, and so on), and its ``__call__`` converts them back to that
NamedTuple and calls :func:`jaxrnn.run` (or the :mod:`jaxrnn.layers` combinators). There is no
second implementation of any equation: a module and the functional API give the same outputs and
gradients for the same parameters.

    >>> import jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> import jaxrnn.nnx as rnn
    >>> class Model(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.rnn = rnn.LSTM(3, 16, rngs=rngs)
    ...         self.head = nnx.Linear(16, 1, rngs=rngs)
    ...     def __call__(self, xs, lengths=None):
    ...         return self.head(self.rnn(xs, lengths=lengths))
    >>> model = Model(nnx.Rngs(0))
    >>> model(jnp.ones((4, 10, 3))).shape
    (4, 10, 1)
    >>> optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

Conversion both ways: ``module.get_params()`` returns the cell's NamedTuple of arrays;
``LSTM(..., params=p)`` builds a module around given parameters and ``module.set_params(p)``
overwrites them in place; :func:`to_variables` / :func:`from_variables` convert any params pytree.

Shapes follow :func:`jaxrnn.run`: inputs ``(B..., T, F)`` (``(T, B..., F)`` with
``time_major=True``), outputs ``(B..., T, O)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrnn.cells import registry
from jaxrnn.cells.base import Cell
from jaxrnn.engine import parallel_run, run
from jaxrnn.layers import bidirectional as bidirectional_layer
from jaxrnn.layers import recurrent, stacked

PyTree = Any

def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def to_variables(params: PyTree) -> PyTree:
    """Wrap every array leaf of a params pytree in ``nnx.Param`` (same structure)."""
    return jax.tree_util.tree_map(nnx.Param, params)


def from_variables(tree: PyTree) -> PyTree:
    """Unwrap ``nnx.Variable`` leaves back to arrays (the inverse of :func:`to_variables`)."""
    return jax.tree_util.tree_map(lambda v: v[...], tree, is_leaf=_is_variable)


def _check_like(expected: PyTree, params: PyTree, what: str) -> None:
    """``params`` must have the structure and leaf shapes of ``expected`` (from eval_shape)."""
    exp_def = jax.tree_util.tree_structure(expected)
    got_def = jax.tree_util.tree_structure(params)
    if exp_def != got_def:
        raise ValueError(f"params: expected the structure of {what}: {exp_def}, got {got_def}")
    leaves = jax.tree_util.tree_leaves
    for e, g in zip(leaves(expected), leaves(params), strict=True):
        if tuple(jnp.shape(g)) != tuple(e.shape):
            shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), expected)
            got = jax.tree_util.tree_map(lambda a: tuple(jnp.shape(a)), params)
            raise ValueError(f"params: expected shapes {shapes} for {what}, got {got}")


def _check_input_size(input_size) -> int:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0:
        raise ValueError(f"input_size: expected a positive int, got {input_size!r}")
    return input_size


class _ParamsModule(nnx.Module):
    """Shared parameter handling: ``self.params`` is the params pytree with ``nnx.Param``
    leaves; ``self._init`` (static) is ``init(key, input_size)``, used to check shapes."""

    def _setup_params(self, init_fn, input_size: int, rngs, params, what: str):
        self.input_size = _check_input_size(input_size)
        expected = jax.eval_shape(lambda k: init_fn(k, input_size), jax.random.key(0))
        if params is None:
            if not isinstance(rngs, nnx.Rngs):
                raise TypeError(
                    f"rngs: expected nnx.Rngs to initialise the parameters (or pass params=), "
                    f"got {type(rngs).__name__}"
                )
            params = init_fn(rngs.params(), input_size)
        else:
            _check_like(expected, params, what)
            params = jax.tree_util.tree_map(
                lambda e, p: jnp.asarray(p, e.dtype), expected, params
            )
        self._what = what
        self._init = init_fn
        self.params = nnx.data(to_variables(params))

    def get_params(self) -> PyTree:
        """The parameters as the functional API's pytree (e.g. :class:`jaxrnn.LSTMParams`)."""
        return from_variables(self.params)

    def set_params(self, params: PyTree) -> None:
        """Overwrite the parameters in place from a pytree of the functional API's structure."""
        expected = jax.eval_shape(lambda k: self._init(k, self.input_size), jax.random.key(0))
        _check_like(expected, params, self._what)
        flat_vars = jax.tree_util.tree_leaves(self.params, is_leaf=_is_variable)
        values = jax.tree_util.tree_leaves(params)
        dtypes = [e.dtype for e in jax.tree_util.tree_leaves(expected)]
        for var, value, dtype in zip(flat_vars, values, dtypes, strict=True):
            var[...] = jnp.asarray(value, dtype)


class CellModule(_ParamsModule):
    """Any :class:`jaxrnn.Cell` as an NNX module over whole sequences (one recurrent layer).

    Args:
      cell: the cell (e.g. ``jaxrnn.lstm(64)``).
      input_size: ``F``.
      rngs: ``nnx.Rngs`` used to draw the initial parameters (``rngs.params()``); not needed
        with ``params``.
      params: initial parameters in the cell's NamedTuple (checked against ``cell.init``).
      reverse, time_major, unroll, remat, hoist_projection: passed to :func:`jaxrnn.run`.

    ``__call__(xs, *, carry=None, lengths=None, return_carry=False)`` returns ``ys`` of shape
    ``(B..., T, O)``, or ``(final_carry, ys)`` with ``return_carry=True``.
    """

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        *,
        rngs: nnx.Rngs | None = None,
        params: PyTree | None = None,
        reverse: bool = False,
        time_major: bool = False,
        unroll: int = 1,
        remat: bool | int = False,
        hoist_projection: bool = False,
    ):
        if not isinstance(cell, Cell):
            raise TypeError(
                f"cell: expected a jaxrnn Cell (e.g. jaxrnn.lstm(64)), got {type(cell)}"
            )
        self.cell = cell
        self.run_options = dict(
            reverse=bool(reverse),
            time_major=bool(time_major),
            unroll=unroll,
            remat=remat,
            hoist_projection=bool(hoist_projection),
        )
        self._setup_params(cell.init, input_size, rngs, params, f"{cell.name} params")

    def initial_carry(self, batch_shape=()):
        """Zeros carry of the cell for ``batch_shape``."""
        return self.cell.initial_carry(self.get_params(), batch_shape)

    def _run(self, params, xs, carry, lengths):
        return run(self.cell, params, xs, carry=carry, lengths=lengths, **self.run_options)

    def __call__(self, xs, *, carry=None, lengths=None, return_carry: bool = False):
        final, ys = self._run(self.get_params(), xs, carry, lengths)
        return (final, ys) if return_carry else ys


class RegisteredCellModule(CellModule):
    """A registered cell (:mod:`jaxrnn.cells.registry`) as an NNX module, built from its
    factory: ``Module(input_size, *sizes, rngs=..., **cell_options)``, where ``sizes`` are the
    factory's positional sizes (``LSTM(F, H)``, ``Jordan(F, H, O)``) and ``cell_options`` go to
    the factory (``peephole=True``, ``compute_dtype=jnp.bfloat16``, ...). Cells that
    :func:`jaxrnn.parallel_run` computes take ``parallel`` (default True): the associative scan
    over time instead of the sequential engine; same params, same result.

    One subclass per registered cell with a ``class_name`` (:data:`MODULES`); this class is
    never built itself.
    """

    registry_name: str = ""

    def __init__(self, input_size: int, *sizes, rngs: nnx.Rngs | None = None,
                 params: PyTree | None = None, reverse: bool = False, time_major: bool = False,
                 unroll: int = 1, remat: bool | int = False, hoist_projection: bool = False,
                 **cell_options):
        entry = registry.get(self.registry_name)
        parallel = cell_options.pop("parallel", True) if entry.parallel else False
        super().__init__(
            entry.factory(*sizes, **{**entry.options, **cell_options}), input_size, rngs=rngs,
            params=params, reverse=reverse, time_major=time_major, unroll=unroll, remat=remat,
            hoist_projection=hoist_projection,
        )
        self.parallel = bool(parallel)

    def _run(self, params, xs, carry, lengths):
        if not self.parallel:
            return super()._run(params, xs, carry, lengths)
        o = self.run_options
        return parallel_run(self.cell, params, xs, carry=carry, lengths=lengths,
                            reverse=o["reverse"], time_major=o["time_major"])


def _module_class(entry: registry.CellEntry) -> type[RegisteredCellModule]:
    sizes = "hidden_size" if entry.sizes == "hidden" else "hidden_size, output_size"
    factory = entry.factory_path.replace(":", ".")
    doc = (f":func:`{factory}` ({entry.doc}) as an NNX module: "
           f"``{entry.class_name}(input_size, {sizes}, *, rngs=None, params=None, ...)``; "
           f"see :class:`RegisteredCellModule`."
           + (" ``parallel=True`` (the default) runs :func:`jaxrnn.parallel_run`."
              if entry.parallel else ""))
    return type(entry.class_name, (RegisteredCellModule,),
                {"registry_name": entry.name, "__doc__": doc, "__module__": __name__,
                 "__qualname__": entry.class_name})


# ``LSTM``, ``GRU``, ``Elman``, ``Jordan``, ``FullyRecurrent``, ``MinGRU``, ``MinLSTM``, ... :
# one class per registered cell with a class name, generated from the registry
MODULES: dict[str, type[RegisteredCellModule]] = {
    e.class_name: _module_class(e) for e in registry.REGISTRY.values() if e.class_name
}
globals().update(MODULES)


def cell_module(name: str, input_size: int, *sizes: int, rngs: nnx.Rngs | None = None,
                params: PyTree | None = None, **options) -> CellModule:
    """Any registered cell (:mod:`jaxrnn.cells.registry`) by name as an NNX module:
    ``cell_module("mgu", 3, 16, rngs=nnx.Rngs(0))``. ``sizes`` are the factory's positional
    sizes (``jordan``: hidden and output); ``options`` split between the factory and
    :class:`CellModule` (``reverse``, ``time_major``, ``unroll``, ``remat``,
    ``hoist_projection``)."""
    entry = registry.get(name)
    run_keys = ("reverse", "time_major", "unroll", "remat", "hoist_projection")
    run_options = {k: options.pop(k) for k in run_keys if k in options}
    cell = entry.factory(*sizes, **{**entry.options, **options})
    return CellModule(cell, input_size, rngs=rngs, params=params, **run_options)


class RNN(_ParamsModule):
    """A multi-layer, optionally bidirectional recurrent network as an NNX module, built from
    :func:`jaxrnn.stacked`, :func:`jaxrnn.bidirectional` and :func:`jaxrnn.recurrent`.

    Args:
      cells: one cell per layer, or one cell repeated ``num_layers`` times (each layer gets its
        own parameters; a cell is independent of its input size).
      input_size: ``F`` of the first layer.
      num_layers: layers when ``cells`` is a single cell (default 1).
      bidirectional: each layer runs forwards and backwards (over each sequence's own length)
        and merges by ``merge`` (``concat`` doubles the width fed to the next layer).
      input_dropout, recurrent_dropout: variational dropout inside each layer (see
        :func:`jaxrnn.recurrent`); ``between_dropout``: dropout on outputs passed between layers.
        Active only in training mode (``module.train()``, or ``deterministic=False``); masks are
        drawn from the ``dropout`` stream of ``rngs``.
      return_sequences: False returns each sequence's last valid output ``(B..., O)``.
      rngs, params: as in :class:`CellModule`; ``params`` is the functional API's params of the
        equivalent ``jaxrnn.stacked(...)`` layer (a tuple with one entry per layer; a
        :class:`jaxrnn.BidirectionalParams` per layer when bidirectional).

    ``__call__(xs, *, carry=None, lengths=None, return_carry=False, deterministic=None)``;
    inputs are batch-major ``(B..., T, F)``; the final carry is a tuple with one entry per layer
    (a ``(forward, backward)`` pair per bidirectional layer).
    """

    def __init__(
        self,
        cells: Cell | Sequence[Cell],
        input_size: int,
        *,
        num_layers: int | None = None,
        bidirectional: bool = False,
        merge: str = "concat",
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        between_dropout: float = 0.0,
        return_sequences: bool = True,
        unroll: int = 1,
        remat: bool | int = False,
        hoist_projection: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
        params: PyTree | None = None,
    ):
        if isinstance(cells, Cell):
            n = 1 if num_layers is None else num_layers
            if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
                raise ValueError(f"num_layers: expected a positive int, got {num_layers!r}")
            cells = [cells] * n
        else:
            cells = list(cells)
            if not cells or not all(isinstance(c, Cell) for c in cells):
                raise TypeError(
                    f"cells: expected a jaxrnn Cell or a non-empty sequence of Cells, got {cells!r}"
                )
            if num_layers is not None and num_layers != len(cells):
                raise ValueError(
                    f"num_layers: expected {len(cells)} (the number of cells given), "
                    f"got {num_layers!r}"
                )
        opts = dict(unroll=unroll, remat=remat, hoist_projection=hoist_projection)
        layers = []
        for c in cells:
            fw = recurrent(c, input_dropout=input_dropout, recurrent_dropout=recurrent_dropout,
                           **opts)
            if bidirectional:
                bw = recurrent(c, reverse=True, input_dropout=input_dropout,
                               recurrent_dropout=recurrent_dropout, **opts)
                layers.append(bidirectional_layer(fw, bw, merge=merge))
            else:
                layers.append(fw)
        self.layer = stacked(layers, between_dropout=between_dropout,
                             return_sequences=return_sequences)
        self.output_size = self.layer.output_size
        self.num_layers = len(cells)
        self.bidirectional = bool(bidirectional)
        self.deterministic = bool(deterministic)
        uses_dropout = max(input_dropout, recurrent_dropout, between_dropout) > 0
        if uses_dropout and isinstance(rngs, nnx.Rngs):
            self.rngs = rngs["dropout"].fork()
        else:
            self.rngs = nnx.data(None)
        self._setup_params(self.layer.init, input_size, rngs, params,
                           f"a stack of {len(cells)} layer(s)")

    def __call__(self, xs, *, carry=None, lengths=None, return_carry: bool = False,
                 deterministic: bool | None = None, key=None):
        det = self.deterministic if deterministic is None else bool(deterministic)
        if not det and key is None:
            if self.rngs is None:
                raise ValueError(
                    "key: training-mode dropout needs a PRNG key; pass key= or build the module "
                    "with rngs= (a 'dropout' stream), got neither"
                )
            key = self.rngs()
        final, ys = self.layer.apply_with_carry(self.get_params(), xs, lengths=lengths, carry=carry,
                                     key=key, deterministic=det)
        return (final, ys) if return_carry else ys


__all__ = [
    "CellModule",
    "RegisteredCellModule",
    "MODULES",
    "cell_module",
    *MODULES,
    "RNN",
    "to_variables",
    "from_variables",
]
