"""Many models in one program: K models of the same shapes trained together by one compiled step,
``jax.vmap`` over their parameters and optimiser states.

The members differ in their seed (initialisation and dropout keys) and optionally in their
learning rate (``optax.inject_hyperparams`` keeps the rate in the optimiser state, so it is just
another vmapped array); they must share every shape, so a grid over hidden sizes is several
ensembles, one per size. Every member sees the same batches in the same order (one data stream,
shuffled with ``data_seed``), which is what a comparison of seeds or rates wants, and what lets
the batch enter the step once (``in_axes=None``) instead of K times. The members can be spread
over devices: the stacked states are split along their leading (member) axis over a mesh, the
batch replicated (``devices=``).

    result = fit_ensemble(model.init, model.apply, "softmax_cross_entropy", train,
                          seeds=range(1, 9), val_data=val, metrics=["accuracy"], epochs=5)
    result.val["accuracy"]          # (8,) one held-out value per member
    result.summary["accuracy"]      # {"mean", "std", "min", "max"}

CPU kernels under ``vmap``
--------------------------
Every fused CPU kernel (:mod:`jaxrnn.kernels`: LSTM, GRU, the Elman-type cells, the Jordan
net, minGRU/minLSTM) has a batching rule: vmapped, each is still one kernel call, which runs
every member on its own weights, the members split over the kernel's threads (each thread whole
members, with no barrier between steps). The values are the single model's.
:func:`kernel_vmap_path` says which path a cell takes. The plain ``lax.scan`` path instead vmaps
into batched matrix products -- one ``(K, B, H) x (K, H, 4H)`` product per step for all members.
``python -m benchmarks.scaling`` measures both for K = 8; :func:`ensemble_classifier` builds
either (``path="kernel"`` or ``"plain"``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn.train.epochs import PlainStepper
from jaxrnn.train.loop import run_loop
from jaxrnn.train.metrics import finalize, get_metrics
from jaxrnn.train.options import loop_options
from jaxrnn.train.step import (
    TrainState,
    batch_weight,
    check_batch,
    init_train_state,
    make_train_step,
    metric_stats,
    skip_nonfinite_updates,
    supervised_objective,
)

PyTree = Any
MEMBER_AXIS = "members"


# --------------------------------------------------------------------------- stacking

def stack(trees: Sequence[PyTree]) -> PyTree:
    """Stack same-structured pytrees along a new leading (member) axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def member(tree: PyTree, k: int) -> PyTree:
    """Member ``k`` of a stacked pytree."""
    return jax.tree_util.tree_map(lambda x: x[k], tree)


def _optimizer(learning_rate, clip_norm: float | None, optimizer: str,
               skip_nonfinite: bool = False):
    makers = {"adam": optax.adam, "sgd": optax.sgd, "rmsprop": optax.rmsprop,
              "adagrad": optax.adagrad}
    if optimizer not in makers:
        raise ValueError(f"optimizer: expected one of {sorted(makers)}, got {optimizer!r}")
    base = optax.inject_hyperparams(makers[optimizer])(learning_rate=learning_rate)
    if clip_norm is not None:
        base = optax.chain(optax.clip_by_global_norm(float(clip_norm)), base)
    # vmapped, each member skips its own non-finite updates
    return skip_nonfinite_updates(base) if skip_nonfinite else base


def init_ensemble(init_fn: Callable, seeds: Iterable[int], *, learning_rates=1e-3,
                  clip_norm: float | None = 1.0, optimizer: str = "adam",
                  skip_nonfinite: bool = False):
    """``(stacked TrainState, optimiser)``: member ``k`` initialised by ``init_fn(key(seed_k))``
    with its own PRNG key and learning rate (a float for all, or one per seed); the optimiser is
    ``clip_by_global_norm`` then ``optimizer`` with the rate read from each member's state, as
    :func:`jaxrnn.train.make_optimizer` builds it for one model (``skip_nonfinite``: wrapped
    by :func:`~jaxrnn.train.skip_nonfinite_updates`, each member skipping its own updates with
    NaN/inf gradients)."""
    if not isinstance(skip_nonfinite, bool):
        raise TypeError(f"skip_nonfinite: expected a bool, got {skip_nonfinite!r}")
    seeds = tuple(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0
                        for s in seeds):
        raise ValueError(f"seeds: expected a non-empty list of ints >= 0, got {seeds!r}")
    rates = (tuple(float(r) for r in learning_rates)
             if isinstance(learning_rates, (list, tuple, np.ndarray))
             else (float(learning_rates),) * len(seeds))
    if len(rates) != len(seeds):
        raise ValueError(f"learning_rates: expected one per seed ({len(seeds)}), got "
                         f"{len(rates)}")
    if not all(r > 0 and math.isfinite(r) for r in rates):
        raise ValueError(f"learning_rates: expected positive numbers, got {rates}")
    states = []
    for seed, rate in zip(seeds, rates, strict=True):
        params = init_fn(jax.random.key(int(seed)))
        states.append(init_train_state(
            params, _optimizer(rate, clip_norm, optimizer, skip_nonfinite), int(seed)))
    shapes = {jax.tree_util.tree_structure(s) for s in states}
    if len(shapes) != 1:
        raise ValueError("init_fn: the members' parameters differ in structure; an ensemble "
                         "needs models of the same shapes")
    return stack(states), _optimizer(rates[0], clip_norm, optimizer, skip_nonfinite)


def member_mesh(devices=None, num_members: int | None = None):
    """A 1-D mesh (axis ``"members"``) over ``devices`` (default all) for the member axis."""
    from jaxrnn.parallel import make_mesh

    mesh = make_mesh(devices=None if devices in (None, True) else devices,
                     axis_name=MEMBER_AXIS)
    if num_members is not None and num_members % mesh.devices.size:
        raise ValueError(f"devices: {num_members} members do not split evenly over "
                         f"{mesh.devices.size} devices")
    return mesh


def _place(states, mesh):
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    return jax.device_put(states, NamedSharding(mesh, P(MEMBER_AXIS)))


# --------------------------------------------------------------------------- steps

def make_ensemble_step(apply_fn: Callable | None, loss, optimizer, *, metrics=(),
                       objective: Callable | None = None, donate: bool = True):
    """``step(stacked_state, batch) -> (stacked_state, logs)``: the train step of
    :func:`jaxrnn.train.make_train_step` vmapped over the members (the batch shared), compiled
    once. ``logs`` leaves have a leading member axis."""
    one = make_train_step(apply_fn, loss, optimizer, metrics=metrics, objective=objective,
                          jit=False, donate=False)
    compiled = jax.jit(jax.vmap(one.raw, in_axes=(0, None)),
                       donate_argnums=(0,) if donate else ())

    def step(states, batch):
        if not isinstance(states, TrainState):
            raise TypeError(f"states: expected a stacked TrainState (see init_ensemble), got "
                            f"{type(states).__name__}")
        check_batch(batch)
        return compiled(states, batch)

    return step


def make_ensemble_eval(apply_fn: Callable | None, loss, *, metrics=(),
                       objective: Callable | None = None):
    """``eval(stacked_params, batch) -> {"loss", "weight", "stats"}`` per member (vmapped)."""
    metrics = get_metrics(metrics)
    if objective is None:
        objective = supervised_objective(apply_fn, loss)

    def one(params, batch):
        value, outputs = objective(params, batch, None, True)
        return {"loss": value, "weight": batch_weight(outputs, batch),
                "stats": metric_stats(metrics, outputs, batch)}

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def _batches(data, batch_size, *, shuffle, seed, drop_remainder):
    from jaxrnn.data.batching import BatchIterator

    if isinstance(data, BatchIterator):
        return data
    if isinstance(data, Mapping):
        return BatchIterator(data, batch_size, shuffle=shuffle, seed=seed,
                             drop_remainder=drop_remainder)
    raise TypeError(f"data: expected a dict of arrays or a BatchIterator, got "
                    f"{type(data).__name__}")


def _add(acc, logs):
    new = {"loss": logs["loss"] * logs["weight"], "weight": logs["weight"],
           "stats": logs["stats"]}
    return new if acc is None else jax.tree_util.tree_map(jnp.add, acc, new)


def _per_member(acc, metrics, k: int) -> dict[str, float]:
    acc = jax.device_get(member(acc, k))
    w = float(acc["weight"])
    out = {"loss": float(acc["loss"]) / w if w > 0 else float("nan")}
    out.update(finalize(metrics, acc["stats"]))
    return out


def evaluate_ensemble(apply_fn, params, loss, data, *, metrics=(), batch_size: int = 256,
                      objective=None, eval_fn=None) -> dict[str, np.ndarray]:
    """Held-out loss and metrics of every member: ``{name: array (K,)}`` (exact over the set,
    as :func:`jaxrnn.train.evaluate` computes them for one model)."""
    metrics = get_metrics(metrics)
    eval_fn = eval_fn or make_ensemble_eval(apply_fn, loss, metrics=metrics, objective=objective)
    acc = None
    it = _batches(data, batch_size, shuffle=False, seed=0, drop_remainder=False)
    for batch in it.epoch_batches(0):
        acc = _add(acc, eval_fn(params, batch))
    if acc is None:
        raise ValueError("data: no batches to evaluate")
    k = int(np.shape(jax.tree_util.tree_leaves(params)[0])[0])
    rows = [_per_member(acc, metrics, i) for i in range(k)]
    return {name: np.asarray([r[name] for r in rows]) for name in rows[0]}


def summarize(values: np.ndarray) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one member), min and max."""
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


class EnsembleResult(NamedTuple):
    """What :func:`fit_ensemble` returns.

    Attributes:
      params: the members' final parameters, stacked (leading axis K; :func:`member` picks one).
      state: the stacked final :class:`~jaxrnn.train.TrainState`.
      seeds, learning_rates: the members' settings, in order.
      history: ``{"loss": [...], "<metric>": [...]}``, per epoch an array ``(K,)``.
      val: held-out ``{"loss": (K,), "<metric>": (K,)}`` after the last epoch ({} without
        ``val_data``).
      summary: ``{name: summarize(val[name])}``.
      seconds: wall time of the training loop (compilation included).
    """

    params: PyTree
    state: TrainState
    seeds: tuple[int, ...]
    learning_rates: tuple[float, ...]
    history: dict
    val: dict
    summary: dict
    seconds: float


class MemberStepper(PlainStepper):
    """The vmapped step (:func:`make_ensemble_step`) as the one loop's stepper.

    The loop's running sums and its guard see one loss per update: the mean over the members
    whose loss and gradients are finite (``finite`` when any member is), weighted by the batch
    the members share. The members' own sums are kept here and closed into :attr:`history`
    (``{name: [array (K,) per epoch]}``) at each epoch's end: the stepper is also the loop's
    epoch callback."""

    def __init__(self, step: Callable, metrics, num_members: int):
        super().__init__(step)
        self.metrics, self.num_members = metrics, num_members
        self.acc = None
        self.history: dict[str, list] = {}

    def __call__(self, states, batch):
        states, logs = self.step(states, batch)
        self.acc = _add(self.acc, logs)
        return states, _loop_logs(logs)

    def end_epoch(self) -> None:
        """Close the members' sums of the epoch so far into one history row each."""
        if self.acc is None:
            return
        rows = [_per_member(self.acc, self.metrics, k) for k in range(self.num_members)]
        for name in rows[0]:
            self.history.setdefault(name, []).append(np.asarray([r[name] for r in rows]))
        self.acc = None

    def on_epoch_end(self, epoch, logs, state) -> None:
        self.end_epoch()


@jax.jit
def _loop_logs(logs):
    finite = logs["finite"]
    n = jnp.sum(finite)
    loss = jnp.sum(jnp.where(finite, logs["loss"], 0.0)) / jnp.maximum(n, 1)
    return {"loss": loss, "weight": logs["weight"][0], "stats": {}, "finite": n > 0}


def fit_ensemble(init_fn: Callable, apply_fn: Callable | None, loss, train_data, *,
                 seeds: Iterable[int] = (0,), learning_rates=1e-3, clip_norm: float | None = 1.0,
                 optimizer: str = "adam", epochs: int = 1, batch_size: int = 32, val_data=None,
                 metrics=(), data_seed: int = 0, max_steps: int | None = None,
                 devices=None, objective: Callable | None = None,
                 skip_nonfinite: bool = False, verbose: bool = False) -> EnsembleResult:
    """Train one member per seed (and learning rate) together, one compiled step for all.

    Args:
      init_fn: ``init(key) -> params`` of one model; apply_fn: its ``apply`` (the protocol of
        :mod:`jaxrnn.train`).
      loss, metrics, objective: as for :func:`jaxrnn.train.fit`.
      train_data: a dict of arrays (shuffled with ``data_seed``, incomplete last batch dropped)
        or a ``BatchIterator``; every member sees the same batches.
      seeds: one member per seed: its initialisation key and its dropout key.
      learning_rates: one float for all members, or one per seed (a learning-rate grid).
      devices: spread the members over devices: True (all) or a list; K must divide evenly.
      max_steps: stop after this many steps (smoke tests).
      skip_nonfinite: each member skips an update whose gradient has NaN/inf entries (its
        parameters and optimiser state unchanged), as ``fit(..., skip_nonfinite=True)`` does
        for one model; the loop stops only when a whole epoch was skipped by every member.
        False: the loop stops (:class:`~jaxrnn.train.epochs.NonFiniteLossError`) at the first
        update where no member has a finite loss.

    The members train on the one loop of :func:`jaxrnn.train.fit` (``run_loop``), its step
    the vmapped one (:class:`MemberStepper`); its progress line shows the members' mean loss,
    and its non-finite guard stops only when no member has a finite loss.
    """
    seeds = tuple(int(s) for s in seeds)
    opts = loop_options(None, {"epochs": epochs, "max_steps": max_steps, "verbose": verbose,
                               "progress": False}, "fit_ensemble")
    metrics = get_metrics(metrics)
    states, opt = init_ensemble(init_fn, seeds, learning_rates=learning_rates,
                                clip_norm=clip_norm, optimizer=optimizer,
                                skip_nonfinite=skip_nonfinite)
    rates = tuple(float(r) for r in np.broadcast_to(np.asarray(learning_rates, np.float64),
                                                    (len(seeds),)))
    if devices is not None and devices is not False:
        states = _place(states, member_mesh(devices, len(seeds)))
    step = make_ensemble_step(apply_fn, loss, opt, metrics=metrics, objective=objective)
    it = _batches(train_data, batch_size, shuffle=True, seed=data_seed, drop_remainder=True)
    members = MemberStepper(step, metrics, len(seeds))
    t0 = time.perf_counter()
    result = run_loop(members, it, states, dataclasses.replace(opts, callbacks=members),
                      metrics=(), monitor=None, validate=None, skipping=skip_nonfinite,
                      params=states.params)
    states = result.state
    members.end_epoch()  # a max_steps stop inside an epoch: its rows, as far as it went
    jax.block_until_ready(states)
    seconds = time.perf_counter() - t0
    val = {}
    if val_data is not None:
        val = evaluate_ensemble(apply_fn, states.params, loss, val_data, metrics=metrics,
                                batch_size=max(batch_size, 256), objective=objective)
    return EnsembleResult(states.params, states, seeds, rates, members.history, val,
                          {k: summarize(v) for k, v in val.items()}, seconds)


# --------------------------------------------------------------------------- models

def kernel_vmap_path(cell: str = "lstm") -> str:
    """How the CPU kernels of cell family ``cell`` run under ``jax.vmap``: ``"batched"`` (one
    call for all members, the kernels' batching rule), ``"sequential"`` (a loop of one call per
    member), or ``"none"`` (no kernel for that family, or the kernels are unavailable)."""
    from jaxrnn import kernels
    from jaxrnn.cells import registry
    from jaxrnn.kernels import ops
    from jaxrnn.train.models import make_cell

    # the kernel family of the cell (its FFI targets), from the registry
    family = registry.get(make_cell(cell, 8).name).kernel
    if family is None or not kernels.available():
        return "none"
    methods = {ops.vmap_method(f"jaxrnn_{family}_{d}") for d in ("forward", "backward")}
    return "batched" if methods == {"broadcast_all"} else "sequential"


def ensemble_classifier(input_size: int, num_outputs: int, *, cell: str = "lstm",
                        hidden: int = 64, path: str = "kernel"):
    """A one-layer recurrent classifier (last valid output -> dense logits) like
    :func:`jaxrnn.train.models.sequence_classifier`, whose recurrence takes the cell's fused CPU
    kernel (``path="kernel"``; under vmap: see :func:`kernel_vmap_path`) or the plain
    ``lax.scan`` (``path="plain"``: vmaps into batched matrix products)."""
    from jaxrnn.layers import dense, recurrent, stacked
    from jaxrnn.train.models import ClassifierParams, Model, make_cell

    if path not in ("kernel", "plain"):
        raise ValueError(f"path: expected 'kernel' or 'plain', got {path!r}")
    c = make_cell(cell, hidden)
    if path == "plain":
        c = c._replace(parts=None)  # no parts: the engine takes the plain scan
    rnn = stacked([recurrent(c)], return_sequences=False)
    head = dense(num_outputs)

    def init(key, input_spec=None):  # the one Model protocol; input_size fixes the shape
        k1, k2 = jax.random.split(key)
        return ClassifierParams(rnn.init(k1, input_size), head.init(k2, rnn.output_size))

    def apply(params, inputs, *, lengths=None, key=None, deterministic=True):
        h = rnn.apply(params.rnn, inputs, lengths=lengths, key=key,
                      deterministic=deterministic)
        return head.apply(params.head, h)

    return Model(init, apply)


__all__ = [
    "stack",
    "member",
    "init_ensemble",
    "member_mesh",
    "make_ensemble_step",
    "make_ensemble_eval",
    "evaluate_ensemble",
    "summarize",
    "fit_ensemble",
    "EnsembleResult",
    "MemberStepper",
    "ensemble_classifier",
    "kernel_vmap_path",
]
