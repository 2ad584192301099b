r"""Truncated backpropagation through time over long streams.

A long stream of ``N`` steps (``B`` parallel streams, arrays ``(B, N, ...)``) is cut into chunks
of ``K`` steps. Chunk :math:`k` starts from the carry :math:`c_{k-1}` that chunk :math:`k-1` ended
with, so the forward pass over all chunks equals one pass over the whole stream; but the carry
enters as a constant,

.. math:: L_k(\theta) = \mathrm{loss}\big(\mathrm{apply}(\theta, x_k;\ \mathrm{sg}(c_{k-1}))\big)

(:math:`\mathrm{sg}` = ``jax.lax.stop_gradient``), so the gradient of chunk :math:`k` reaches back
at most ``K`` steps and does not depend on earlier inputs except through the value of
:math:`c_{k-1}`. Memory is ``O(K)`` instead of ``O(N)``; the parameters are updated after every
chunk (Williams & Peng 1990; Sutskever 2013 ch. 2).

The model is *stateful*: ``apply(params, inputs, *, carry, key=None, deterministic=True)
-> (new_carry, outputs)`` (e.g. a :func:`jaxrnn.stacked` layer's apply with an embedding and
readout around it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn.data.batching import DataPosition
from jaxrnn.train.losses import get_loss
from jaxrnn.train.metrics import finalize, get_metrics
from jaxrnn.train.step import (
    TrainState,
    batch_weight,
    check_batch,
    compile_step,
    metric_stats,
    step_logs,
)

PyTree = Any


def batchify(stream, batch_size: int) -> np.ndarray:
    """Cut one stream ``(N, ...)`` into ``batch_size`` contiguous parallel streams
    ``(batch_size, N // batch_size, ...)``; the last ``N % batch_size`` steps are dropped.

    Stream ``b`` is ``stream[b * M : (b + 1) * M]`` with ``M = N // batch_size``, so each row is
    contiguous text/time and the carry of row ``b`` is meaningful from chunk to chunk.
    """
    a = np.asarray(stream)
    if a.ndim < 1:
        raise ValueError(f"stream: expected an array of rank >= 1, got shape {a.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    m = a.shape[0] // batch_size
    if m == 0:
        raise ValueError(f"stream: {a.shape[0]} steps are fewer than batch_size={batch_size}")
    return a[: m * batch_size].reshape((batch_size, m, *a.shape[1:]))


def stream_chunks(data: Mapping[str, Any], chunk_len: int, *, drop_remainder: bool = True):
    """Chunks of a dict of streams ``{key: (B, N, ...)}`` along axis 1, each ``(B, K, ...)``.

    With ``drop_remainder`` the last partial chunk is dropped (one shape, one compilation); keep
    it for evaluation so every step counts.
    """
    if not isinstance(data, Mapping) or "inputs" not in data:
        raise TypeError("data: expected a dict of (B, N, ...) arrays with at least 'inputs'")
    if isinstance(chunk_len, bool) or not isinstance(chunk_len, int) or chunk_len < 1:
        raise ValueError(f"chunk_len: expected a positive int, got {chunk_len!r}")
    arrays = {k: np.asarray(v) for k, v in data.items()}
    shapes = {k: v.shape[:2] for k, v in arrays.items()}
    if any(v.ndim < 2 for v in arrays.values()) or len(set(shapes.values())) != 1:
        raise ValueError(f"data: every array must be (B, N, ...) with the same B and N, got "
                         f"{ {k: v.shape for k, v in arrays.items()} }")
    n = arrays["inputs"].shape[1]
    stop = n - n % chunk_len if drop_remainder else n
    if stop == 0:
        raise ValueError(f"chunk_len: {chunk_len} is longer than the stream ({n} steps)")
    return [{k: v[:, i : i + chunk_len] for k, v in arrays.items()}
            for i in range(0, stop, chunk_len)]


def zeros_carry(apply_fn: Callable, params: PyTree, inputs) -> PyTree:
    """A zero carry of the structure ``apply_fn`` returns for ``inputs`` (shapes only, nothing
    is computed); the usual start of a stream."""
    return zeros_carry_maker(apply_fn, params, inputs)()


def zeros_carry_maker(apply_fn: Callable, params: PyTree, inputs) -> Callable[[], PyTree]:
    """``make() -> carry``: fresh zero carries as :func:`zeros_carry`, the model traced for
    their shapes once (a reset every few chunks must not retrace it; each call makes new
    buffers, as the step donates the carry it is given)."""
    shapes = jax.eval_shape(
        lambda p, x: apply_fn(p, x, carry=None, key=None, deterministic=True)[0], params, inputs
    )
    return lambda: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def chunk_objective(apply_fn: Callable, loss_fn) -> Callable:
    """``objective(params, carry, batch, key, deterministic) -> (loss, (new_carry, outputs))``
    with the incoming carry cut from the graph (``stop_gradient``): the loss of one chunk."""
    loss_fn = get_loss(loss_fn)

    def objective(params, carry, batch, key, deterministic):
        carry = jax.lax.stop_gradient(carry)
        new_carry, outputs = apply_fn(
            params, batch["inputs"], carry=carry, key=key, deterministic=deterministic
        )
        loss = loss_fn(outputs, batch["targets"], batch.get("mask"))
        return loss, (new_carry, outputs)

    return objective


def make_tbptt_step(
    apply_fn: Callable,
    loss_fn,
    optimizer: optax.GradientTransformation,
    *,
    metrics=(),
    donate: bool = True,
    jit: bool = True,
    data_parallel=None,
) -> Callable:
    """Build ``step(state, carry, batch) -> (new_state, new_carry, logs)`` for one chunk
    (``data_parallel``: see :func:`~jaxrnn.train.step.compile_step`).

    ``batch`` is one chunk ``{"inputs": (B, K, ...), "targets": ..., "mask"?}``; ``carry`` is the
    previous chunk's final carry (or :func:`zeros_carry`); the returned carry is detached. The
    dropout key of update ``s`` is ``fold_in(state.key, s)`` as in
    :func:`~jaxrnn.train.make_train_step`; ``logs`` are as there.
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer: expected an optax.GradientTransformation, got {type(optimizer).__name__}"
        )
    metrics = get_metrics(metrics)
    objective = chunk_objective(apply_fn, loss_fn)

    def step(state: TrainState, carry, batch):
        key = jax.random.fold_in(state.key, state.step)
        (loss, (new_carry, outputs)), grads = jax.value_and_grad(
            lambda p: objective(p, carry, batch, key, False), has_aux=True
        )(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        logs = step_logs(loss, grads, outputs, batch, metrics)
        new_state = TrainState(params, opt_state, state.step + 1, state.key)
        return new_state, jax.lax.stop_gradient(new_carry), logs

    compiled = compile_step(step, donate_argnums=(0, 1) if donate else (),
                            data_parallel=data_parallel) if jit else step

    def checked_step(state, carry, batch):
        if not isinstance(state, TrainState):
            raise TypeError(f"state: expected a TrainState, got {type(state).__name__}")
        check_batch(batch)
        return compiled(state, carry, batch)

    checked_step.raw = step
    return checked_step


def train_stream(step: Callable, state: TrainState, data, chunk_len: int, carry) -> tuple:
    """One pass of a :func:`make_tbptt_step` ``step`` over the chunks of ``data``
    (``drop_remainder=True``), passing the carry along. Returns ``(state, carry, losses)`` with
    ``losses`` the per-chunk training losses (NumPy)."""
    losses = []
    for batch in stream_chunks(data, chunk_len):
        state, carry, logs = step(state, carry, batch)
        losses.append(logs["loss"])
    return state, carry, np.asarray(jax.device_get(losses))


def _stream_evaluator(apply_fn: Callable, loss_fn, metrics) -> Callable:
    """``evaluate(params, data, chunk_len, carry=None) -> (logs, final_carry)``, its chunk
    function compiled once (for every epoch of :func:`fit_stream`)."""
    metrics = get_metrics(metrics)
    loss_fn = get_loss(loss_fn)

    @jax.jit
    def run_chunk(params, carry, batch):
        new_carry, outputs = apply_fn(params, batch["inputs"], carry=carry, key=None,
                                      deterministic=True)
        loss = loss_fn(outputs, batch["targets"], batch.get("mask"))
        w = batch_weight(outputs, batch)
        if batch.get("mask") is None:
            # Per-step loss over (B, K): weight by the number of steps, not just rows.
            w = jnp.asarray(np.prod(np.shape(batch["targets"])[:2]), jnp.float32)
        return new_carry, loss * w, w, metric_stats(metrics, outputs, batch)

    def evaluate(params, data, chunk_len, carry=None):
        chunks = stream_chunks(data, chunk_len, drop_remainder=False)
        if carry is None:
            carry = zeros_carry(apply_fn, params, chunks[0]["inputs"])
        total = weight = 0.0
        sums = None
        for batch in chunks:
            check_batch(batch)
            carry, lw, w, stats = run_chunk(params, carry, batch)
            total, weight = total + lw, weight + w
            sums = stats if sums is None else jax.tree_util.tree_map(lambda a, b: a + b, sums,
                                                                     stats)
        out = {"loss": float(total) / float(weight)}
        out.update(finalize(metrics, sums))
        return out, carry

    return evaluate


def evaluate_stream(
    apply_fn: Callable,
    params: PyTree,
    loss_fn,
    data,
    chunk_len: int,
    *,
    carry=None,
    metrics=(),
) -> tuple[dict, PyTree]:
    """Stateful evaluation: run the whole stream chunk by chunk, carrying the state across
    (no truncation of the forward pass), and return ``({"loss", metrics...}, final_carry)``
    with the loss and metrics exact over all steps (the last partial chunk included)."""
    return _stream_evaluator(apply_fn, loss_fn, metrics)(params, data, chunk_len, carry)


# --------------------------------------------------------------------------- fit_stream

class ChunkIterator:
    """The chunks of a stream as a resumable iterator (the interface of
    :class:`~jaxrnn.data.BatchIterator` that :class:`~jaxrnn.train.epochs.EpochLoop` uses):
    every epoch is the same chunks in order, from chunk ``batch_index`` of epoch ``epoch``."""

    def __init__(self, data, chunk_len: int, seed: int = 0):
        self.chunks = stream_chunks(data, chunk_len)
        self.seed, self.epoch, self.batch_index = int(seed), 0, 0

    def num_batches(self, epoch=None) -> int:
        return len(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self):
        while self.batch_index < len(self.chunks):
            self.batch_index += 1
            yield self.chunks[self.batch_index - 1]
        self.epoch, self.batch_index = self.epoch + 1, 0

    @property
    def position(self) -> DataPosition:
        return DataPosition(self.epoch, self.batch_index, self.seed)

    def set_position(self, position) -> None:
        position = DataPosition(**{k: int(position[k]) for k in DataPosition._fields}) \
            if isinstance(position, Mapping) else DataPosition(*(int(x) for x in position))
        if position.seed != self.seed:
            raise ValueError(f"position: saved with seed {position.seed}, but this run has seed "
                             f"{self.seed}")
        if position.epoch < 0 or not 0 <= position.batch_index <= len(self.chunks):
            raise ValueError(f"position: out of range for this stream, got {position}")
        self.epoch, self.batch_index = position.epoch, position.batch_index


class _StreamStepper:
    """A TBPTT step as an EpochLoop stepper: holds the carry, a fresh zero carry at the start of
    every epoch (the stream starts again) and, with ``reset_every``, before every chunk whose
    index in the epoch is a multiple of it, and checkpoints it.

    The chunk index is read from ``chunks`` (the :class:`ChunkIterator`, which counts a chunk as
    read when it yields it), so the resets follow the stream position, which a checkpoint
    restores: a resumed run resets where the uninterrupted one did."""

    def __init__(self, step, zero_carry: Callable, chunks: ChunkIterator,
                 reset_every: int | None = None):
        self.step, self.zero_carry, self.chunks = step, zero_carry, chunks
        self.reset_every = reset_every or None
        self.carry = zero_carry()

    def __call__(self, state, batch):
        if self.reset_every and (self.chunks.batch_index - 1) % self.reset_every == 0:
            self.carry = self.zero_carry()
        state, self.carry, logs = self.step(state, self.carry, batch)
        return state, logs

    def begin_epoch(self) -> None:
        self.carry = self.zero_carry()

    def extra(self) -> dict:
        return {"carry": self.carry}

    def extra_target(self) -> dict:
        return {"carry": self.zero_carry()}

    def load_extra(self, extra: dict) -> None:
        self.carry = extra["carry"]


def fit_stream(
    apply_fn: Callable,
    params: PyTree,
    loss,
    optimizer: optax.GradientTransformation,
    data,
    chunk_len: int,
    *,
    val_data=None,
    reset_every: int | None = None,
    options=None,
    **loop_options,
):
    """:func:`~jaxrnn.train.fit` for truncated BPTT over streams: epochs of
    :func:`make_tbptt_step` over the ``chunk_len``-step chunks of ``data`` (``{key: (B, N,
    ...)}``, e.g. from :func:`batchify`; the last partial chunk is dropped, one shape), the
    carry passed from chunk to chunk and reset to zeros at the start of every epoch, and with
    ``reset_every=N`` also before chunks ``N, 2N, ...`` of every epoch (None or 0: never inside
    an epoch), so the model learns to read from a fresh state and its state cannot drift far
    from what a fresh start reaches (``reset_every=1``: independent chunks from zeros).

    The loop's options are :func:`~jaxrnn.train.fit`'s, one
    :class:`~jaxrnn.train.options.LoopOptions` (``options=`` or keywords of the same names).
    ``time_budget_s``, ``on_step`` and ``max_steps`` end training after the current chunk: the
    checkpoint then holds the position inside the epoch (``resume`` finishes it), and
    ``FitResult.stop_reason`` says ``"time_budget"`` / ``"callback"``.

    The same conveniences as ``fit``, through the same pieces
    (:class:`~jaxrnn.train.epochs.EpochLoop`): progress bar, history, validation after each
    epoch with :func:`evaluate_stream` on ``val_data`` (stateful, exact over every step), early
    stopping (``monitor``, ``patience``, ``restore_best``), checkpoints every epoch and every
    ``checkpoint_every`` chunks holding the state, the carry, the position and the history (a
    resumed run continues bit-for-bit), Ctrl-C saving, the non-finite guard, callbacks and the
    per-epoch ``lr_scale``, ``checkpoint_format`` (a store of :mod:`jaxrnn.io.store`). The arguments
    mean what they mean for ``fit``.

    Returns:
      A :class:`~jaxrnn.train.epochs.FitResult`.
    """
    from jaxrnn.train.loop import _default_monitor, _guard, run_loop, with_lr_scale
    from jaxrnn.train.options import _check_int
    from jaxrnn.train.options import loop_options as loop_options_of
    from jaxrnn.train.step import init_train_state

    opts = loop_options_of(options, loop_options, "fit_stream")
    _check_int(reset_every, "reset_every", 0, optional=True)
    metrics = get_metrics(opts.metrics)
    loss_fn = get_loss(loss)
    it = ChunkIterator(data, chunk_len, opts.seed)
    monitor = _default_monitor(opts.monitor, val_data, opts.patience, metrics)
    optimizer, skipping = _guard(optimizer, params, opts.skip_nonfinite)
    optimizer = with_lr_scale(optimizer, opts.lr_scale, opts.epochs, len(it))
    state = init_train_state(params, optimizer,
                             jax.random.key(opts.seed) if opts.key is None else opts.key)
    step = make_tbptt_step(apply_fn, loss_fn, optimizer, metrics=metrics, donate=opts.donate,
                           data_parallel=opts.data_parallel)
    stepper = _StreamStepper(step, zeros_carry_maker(apply_fn, params, it.chunks[0]["inputs"]),
                             it, reset_every)
    validate = None
    if val_data is not None:
        evaluator = _stream_evaluator(apply_fn, loss_fn, metrics)

        def validate(p):
            return evaluator(p, val_data, chunk_len)[0]

    return run_loop(stepper, it, state, opts, metrics=metrics, monitor=monitor,
                    validate=validate, skipping=skipping, params=params)


__all__ = [
    "batchify",
    "stream_chunks",
    "zeros_carry",
    "zeros_carry_maker",
    "chunk_objective",
    "make_tbptt_step",
    "train_stream",
    "evaluate_stream",
    "fit_stream",
    "ChunkIterator",
]
