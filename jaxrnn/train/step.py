r"""The training step: model apply + loss + any Optax optimiser, compiled once with ``jit``.

One update, with :math:`\theta` the parameters, :math:`k` the base key and :math:`s` the step:

.. math::
   k_s &= \mathrm{fold\_in}(k, s) \qquad
   L(\theta) = \mathrm{loss}(\mathrm{apply}(\theta, x;\ k_s), y, m) \\
   u, \mathrm{opt}' &= \mathrm{optimizer.update}(\nabla_\theta L, \mathrm{opt}, \theta) \qquad
   \theta' = \theta + u

The dropout key of step :math:`s` is derived from the stored key and the step counter, so the
stream of keys is a pure function of ``(key, step)``: a run resumed from a checkpoint draws the
same dropout masks as one that never stopped.

Gradient clipping and learning-rate schedules are Optax's: :func:`make_optimizer` chains
``optax.clip_by_global_norm`` before the optimiser and accepts an ``optax.Schedule`` as the
learning rate. Any other ``optax.GradientTransformation`` works as well.

Everything that turns a Python step function into a compiled one goes through
:func:`compile_step`, the single hook point for placement and sharding (data parallelism).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn.train.losses import get_loss
from jaxrnn.train.metrics import Metric, get_metrics

Array = jax.Array
PyTree = Any
Batch = Mapping[str, Any]


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (and saves in a checkpoint).

    Attributes:
      params: the model parameters (any pytree of arrays).
      opt_state: the Optax optimiser state.
      step: int32 scalar, number of updates applied so far.
      key: the base PRNG key (typed, from ``jax.random.key``); step ``s`` uses
        ``fold_in(key, s)``.
    """

    params: PyTree
    opt_state: PyTree
    step: Array
    key: Array


def init_train_state(params: PyTree, optimizer: optax.GradientTransformation, key) -> TrainState:
    """A fresh :class:`TrainState`; ``key`` is a typed key or an int seed.

    The state holds a *copy* of ``params``: the train step donates the state's buffers, and the
    caller's arrays must stay valid."""
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer: expected an optax.GradientTransformation (e.g. optax.adam(1e-3)), "
            f"got {type(optimizer).__name__}"
        )
    if isinstance(key, int):
        key = jax.random.key(key)
    elif not (hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(
            f"key: expected a typed PRNG key (jax.random.key(seed)) or an int seed, got {key!r}"
        )
    params = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), params)
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), key)


def global_norm(tree) -> Array:
    """:math:`\\sqrt{\\sum_i \\|g_i\\|^2}` over all leaves (float32)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                        for g in jax.tree_util.tree_leaves(tree)))


# apply_if_finite gives up (applies a non-finite update) after this many consecutive skipped
# updates; the largest int32 means never (its counter saturates there).
NEVER_GIVE_UP = 2**31 - 1


def _check_positive_number(value, argname: str, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (>= 0 with ``allow_zero``); bools are not numbers here."""
    kind = "non-negative" if allow_zero else "positive"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{argname}: expected a finite {kind} number, got "
                        f"{type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{argname}: expected a finite {kind} number, got {v!r}")
    return v


def skip_nonfinite_updates(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """``optimizer`` wrapped with ``optax.apply_if_finite``: an update whose gradients hold any
    NaN or inf is skipped whole (parameters and optimiser state unchanged, a zero update), and
    counted in the state (``total_notfinite``). It never gives up and applies such an update.

    Skipping the whole update (rather than zeroing the NaN entries, ``optax.zero_nans``) is the
    choice here: a gradient with some NaN entries is not a trustworthy direction for the others.
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer: expected an optax.GradientTransformation, got "
                        f"{type(optimizer).__name__}")
    return optax.apply_if_finite(optimizer, max_consecutive_errors=NEVER_GIVE_UP)


def skips_nonfinite(optimizer: optax.GradientTransformation, params) -> bool:
    """Whether ``optimizer`` is wrapped by :func:`skip_nonfinite_updates` (its state is an
    ``optax.ApplyIfFiniteState``); looks at shapes only."""
    return isinstance(jax.eval_shape(optimizer.init, params), optax.ApplyIfFiniteState)


def make_optimizer(
    learning_rate: float | optax.Schedule = 1e-3,
    *,
    optimizer: str = "adam",
    clip_norm: float | None = 1.0,
    weight_decay: float = 0.0,
    skip_nonfinite: bool = False,
) -> optax.GradientTransformation:
    """An Optax optimiser with gradient clipping by global norm chained in front.

    Args:
      learning_rate: a finite positive float or an ``optax.Schedule`` (e.g.
        ``optax.warmup_cosine_decay_schedule(...)``).
      optimizer: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"`` or ``"adagrad"``.
      clip_norm: rescale gradients so their global L2 norm is at most this (a finite positive
        number); None disables.
      weight_decay: decoupled weight decay (``adamw`` only), finite and >= 0.
      skip_nonfinite: wrap the whole chain with ``optax.apply_if_finite`` (see
        :func:`skip_nonfinite_updates`): an update with a NaN/inf gradient is skipped, so the
        parameters stay finite. It is what saves such a step: an Elman net with its recurrent
        weights scaled by 3 on 10,000 steps has a NaN gradient on every backend (the
        cotangent overflows to inf and meets zeros), and clipping cannot make it finite (a
        clipped NaN is NaN). Off by default here, unlike the command line: the optimiser also
        serves loops of the caller's own (``make_train_step``, ensembles), where a skipped
        update is counted only in the optimiser state and nobody reports it, while ``fit``
        stops at the first non-finite update and names it. Ask for skipping where it is
        reported: ``fit(..., skip_nonfinite=True)`` / ``jaxrnn.keras.fit(...,
        skip_nonfinite=True)`` (the count per epoch in the progress line), or here.

    Raises:
      TypeError / ValueError naming the argument, for NaN, inf, <= 0, bools or non-numbers.
    """
    lr = learning_rate
    if not callable(lr):
        lr = _check_positive_number(lr, "learning_rate")
    weight_decay = _check_positive_number(weight_decay, "weight_decay", allow_zero=True)
    if clip_norm is not None:
        clip_norm = _check_positive_number(clip_norm, "clip_norm")
    if not isinstance(skip_nonfinite, bool):
        raise TypeError(f"skip_nonfinite: expected a bool, got {skip_nonfinite!r}")
    makers = {
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(lr, weight_decay=weight_decay),
        "sgd": lambda: optax.sgd(lr),
        "rmsprop": lambda: optax.rmsprop(lr),
        "adagrad": lambda: optax.adagrad(lr),
    }
    if optimizer not in makers:
        raise ValueError(f"optimizer: expected one of {sorted(makers)}, got {optimizer!r}")
    chain = makers[optimizer]()
    if clip_norm is not None:
        chain = optax.chain(optax.clip_by_global_norm(clip_norm), chain)
    return skip_nonfinite_updates(chain) if skip_nonfinite else chain


def scale_by_epoch(factors, steps_per_epoch: int) -> optax.GradientTransformation:
    """Multiply every update of epoch ``e`` by ``factors[e]`` (the last factor after the end):
    a per-epoch learning-rate schedule (Keras' ``LearningRateScheduler``) for any optimiser
    whose update is linear in its learning rate (SGD, Adam, AdamW, RMSProp, Adagrad: all of
    :func:`make_optimizer`'s). The epoch is ``count // steps_per_epoch`` of its own update
    count, kept in the optimiser state, so a resumed run scales as one that never stopped."""
    values = [_check_positive_number(f, f"lr_scale(epoch={e})", allow_zero=True)
              for e, f in enumerate(factors)]
    if not values:
        raise ValueError("lr_scale: no epochs to schedule")
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or \
            steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch: expected a positive int, got {steps_per_epoch!r}")
    table = jnp.asarray(values, jnp.float32)

    def schedule(count):
        return table[jnp.minimum(count // steps_per_epoch, len(values) - 1)]

    return optax.scale_by_schedule(schedule)


# --------------------------------------------------------------------------- objectives

def supervised_objective(apply_fn: Callable, loss_fn) -> Callable:
    """The objective of a model under the batch protocol of :mod:`jaxrnn.train`.

    ``objective(params, batch, key, deterministic) -> (loss, outputs)`` with
    ``outputs = apply_fn(params, batch["inputs"], lengths=batch.get("lengths"), key=key,
    deterministic=deterministic)`` and ``loss = loss_fn(outputs, batch["targets"],
    batch.get("mask"))``.
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn: expected a callable model apply, got {type(apply_fn).__name__}")
    loss_fn = get_loss(loss_fn)

    def objective(params, batch, key, deterministic):
        outputs = apply_fn(
            params,
            batch["inputs"],
            lengths=batch.get("lengths"),
            key=key,
            deterministic=deterministic,
        )
        return loss_fn(outputs, batch["targets"], batch.get("mask")), outputs

    return objective


def check_batch(batch, argname: str = "batch") -> None:
    """A batch must be a mapping with ``inputs`` and ``targets`` (checked before tracing)."""
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"{argname}: expected a dict with keys 'inputs' and 'targets' (optional 'lengths', "
            f"'mask'), got {type(batch).__name__}"
        )
    missing = [k for k in ("inputs", "targets") if k not in batch]
    if missing:
        raise ValueError(f"{argname}: missing keys {missing}; got keys {sorted(batch)}")


def metric_stats(metrics: tuple[Metric, ...], outputs, batch) -> dict:
    """``{name: sums}`` of each metric on one batch (traceable)."""
    return {m.name: m.stats(outputs, batch["targets"], batch.get("mask")) for m in metrics}


def batch_weight(outputs, batch) -> Array:
    """How many elements a batch's mean loss averages over (mask sum, else the batch size),
    so losses of unequal batches combine into an exact mean."""
    mask = batch.get("mask")
    if mask is not None:
        return jnp.sum(jnp.asarray(mask, jnp.float32))
    return jnp.asarray(jnp.shape(batch["targets"])[0] if jnp.ndim(batch["targets"]) else 1,
                       jnp.float32)


def step_logs(loss, grads, outputs, batch, metrics) -> dict:
    """The logs of one update: ``loss``, ``grad_norm`` (before clipping), ``finite`` (loss and
    every gradient entry finite), ``weight`` and the metrics' ``stats``."""
    grad_norm = global_norm(grads)
    return {
        "loss": loss,
        "grad_norm": grad_norm,
        "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm),
        "weight": batch_weight(outputs, batch),
        "stats": metric_stats(metrics, jax.lax.stop_gradient(outputs), batch),
    }


# --------------------------------------------------------------------------- compilation hook

def compile_step(fn: Callable, *, donate_argnums: tuple[int, ...] = (), data_parallel=None):
    """``jax.jit`` one step function.

    Every train and eval step of :mod:`jaxrnn.train` is compiled here and nowhere else, so this
    is the hook point for placement and sharding (e.g. data parallelism: the batch argument split
    along its leading axis over a device mesh, the state replicated).

    ``data_parallel``: None or False (single device), True (all devices), a device count or a
    ``jax.sharding.Mesh``; see :func:`jaxrnn.parallel.data_parallel_jit`.
    """
    from jaxrnn.parallel import data_parallel_jit, resolve_mesh

    mesh = resolve_mesh(data_parallel)
    if mesh is not None:
        return data_parallel_jit(fn, mesh, donate_argnums=donate_argnums)
    return jax.jit(fn, donate_argnums=donate_argnums)


# --------------------------------------------------------------------------- steps

def make_train_step(
    apply_fn: Callable,
    loss_fn,
    optimizer: optax.GradientTransformation,
    *,
    metrics=(),
    objective: Callable | None = None,
    donate: bool = True,
    jit: bool = True,
    data_parallel=None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """Build ``step(state, batch) -> (new_state, logs)``.

    Args:
      apply_fn: the model, ``apply(params, inputs, *, lengths=None, key=None,
        deterministic=True) -> outputs``; ignored when ``objective`` is given (pass None).
      loss_fn: ``loss(outputs, targets, mask) -> scalar`` or a name from
        :data:`jaxrnn.train.losses.LOSSES`.
      optimizer: any ``optax.GradientTransformation`` (see :func:`make_optimizer`).
      metrics: names or :class:`~jaxrnn.train.metrics.Metric` s computed on the training
        batch (their sums are returned in ``logs``).
      objective: instead of ``apply_fn``/``loss_fn``, a full
        ``objective(params, batch, key, deterministic) -> (loss, outputs)``.
      donate: donate the old state's buffers to the new one (``state`` must not be reused).
      jit: compile with :func:`compile_step` (False: eager, for debugging).
      data_parallel: split each batch over devices (see :func:`compile_step`).

    Returns:
      ``step``; ``logs`` has ``loss`` (scalar), ``grad_norm`` (global L2 norm before clipping),
      ``finite`` (bool: loss and gradients finite), ``weight`` (see :func:`batch_weight`) and
      ``stats`` (``{metric: sums}``).
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer: expected an optax.GradientTransformation, got {type(optimizer).__name__}"
        )
    metrics = get_metrics(metrics)
    if objective is None:
        objective = supervised_objective(apply_fn, loss_fn)

    def step(state: TrainState, batch):
        key = jax.random.fold_in(state.key, state.step)
        (loss, outputs), grads = jax.value_and_grad(
            lambda p: objective(p, batch, key, False), has_aux=True
        )(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        logs = step_logs(loss, grads, outputs, batch, metrics)
        return TrainState(params, opt_state, state.step + 1, state.key), logs

    compiled = compile_step(step, donate_argnums=(0,) if donate else (),
                            data_parallel=data_parallel) if jit else step

    def checked_step(state, batch):
        if not isinstance(state, TrainState):
            raise TypeError(
                f"state: expected a TrainState (see init_train_state), got {type(state).__name__}"
            )
        check_batch(batch)
        return compiled(state, batch)

    checked_step.raw = step  # the uncompiled function, for composition (e.g. inside a scan)
    return checked_step


def make_eval_step(
    apply_fn: Callable,
    loss_fn,
    *,
    metrics=(),
    objective: Callable | None = None,
    jit: bool = True,
    data_parallel=None,
) -> Callable[[PyTree, Batch], dict]:
    """Build ``eval_step(params, batch) -> logs`` (deterministic, no key): ``loss``, ``weight``,
    ``stats`` as in :func:`make_train_step`, plus ``outputs``."""
    metrics = get_metrics(metrics)
    if objective is None:
        objective = supervised_objective(apply_fn, loss_fn)

    def step(params, batch):
        loss, outputs = objective(params, batch, None, True)
        return {
            "loss": loss,
            "weight": batch_weight(outputs, batch),
            "stats": metric_stats(metrics, outputs, batch),
            "outputs": outputs,
        }

    compiled = compile_step(step, data_parallel=data_parallel) if jit else step

    def checked_step(params, batch):
        check_batch(batch)
        return compiled(params, batch)

    return checked_step


__all__ = [
    "TrainState",
    "init_train_state",
    "make_optimizer",
    "skip_nonfinite_updates",
    "skips_nonfinite",
    "scale_by_epoch",
    "step_logs",
    "supervised_objective",
    "make_train_step",
    "make_eval_step",
    "compile_step",
    "check_batch",
    "batch_weight",
    "metric_stats",
]
