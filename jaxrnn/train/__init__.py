"""Training machinery: losses, metrics, a compiled train step, truncated BPTT, ``fit`` /
``evaluate`` / ``predict`` and atomic checkpoints.

Protocols (stable; the tasks build on them)
-------------------------------------------

**Batch**: a dict of arrays sharing their leading (batch) axis ``B``::

    {"inputs":  (B, T, F) float features or (B, T) int token ids,
     "targets": per-sequence (B,) / (B, O), or per-step (B, T) / (B, T, O),
     "lengths": optional int (B,): valid steps, post-padded (passed to the model),
     "mask":    optional (B, T) bool/float: which targets count (passed to loss and metrics)}

``lengths`` is the model's business (the scan engine freezes the carry past them); ``mask`` is
the loss's (mean over valid elements). A per-step task over padded sequences passes both
(``mask = jaxrnn.data.mask_from_lengths(lengths, T)``). Other keys are carried along untouched.
Losses of batches are combined weighted by ``mask.sum()`` (else by ``B``), so give per-step
targets a mask when batches differ in length (bucketing) and the averages stay exact.

**Model**: a pure function
``apply(params, inputs, *, lengths=None, key=None, deterministic=True) -> outputs``;
``key`` is a PRNG key for dropout (None when ``deterministic``). Parameters are any pytree.
Build models from :mod:`jaxrnn.layers` (``stacked``, ``bidirectional``, ``dense``,
``embedding``); :mod:`jaxrnn.train.models` builds them from the CLI's options (``make_cell``,
``recurrent_stack``, ``sequence_classifier``).

**Loss**: ``loss(outputs, targets, mask=None) -> scalar`` (see :mod:`jaxrnn.train.losses`; names
``"mse"``, ``"mae"``, ``"binary_cross_entropy_with_logits"``, ``"softmax_cross_entropy"`` and
Keras' ``"sparse_categorical_crossentropy"``, ``"categorical_crossentropy"``,
``"binary_crossentropy"``, ``"mean_squared_error"`` work too, all from logits).

**Callback** (:mod:`jaxrnn.train.callbacks`): ``on_epoch_end(epoch, logs, state) -> stop?``
(or a plain function), passed to ``fit(..., callbacks=[...])``; ``lr_scale=`` gives a per-epoch
learning-rate factor. ``fit(..., skip_nonfinite=True)`` (or ``make_optimizer(...,
skip_nonfinite=True)``) skips NaN/inf updates; otherwise ``fit`` stops with
:class:`NonFiniteLossError` naming the epoch and batch.

**Metric**: :class:`~jaxrnn.train.metrics.Metric` ``(name, stats, result)``, or a name:
``"accuracy"``, ``"binary_accuracy"``, ``"bpc"``, ``"perplexity"``, ``"rmse"``, ``"mae"``,
``"nrmse"``.

**Objective** (escape hatch for anything not ``loss(apply(...), targets)``):
``objective(params, batch, key, deterministic) -> (loss, outputs)``, passed as ``objective=``
with ``apply_fn=None``.

**Stateful model** (truncated BPTT, :mod:`jaxrnn.train.tbptt`):
``apply(params, inputs, *, carry, key=None, deterministic=True) -> (new_carry, outputs)``;
``make_tbptt_step``, ``train_stream`` and ``evaluate_stream`` run it over ``batchify``-ed streams;
``fit_stream`` is ``fit`` for streams (progress, history, validation, early stopping,
checkpoints with the carry, bit-exact resume).

**Checkpoints** (:mod:`jaxrnn.io`): ``save_checkpoint(dir, state, data_position=...,
extra=...)`` / ``load_checkpoint(dir, target_state)`` for resumable training (``fit(...,
checkpoint_dir=..., resume=True)`` does this itself), in the ``msgpack`` store; the same
guarantees in Orbax's format with ``fit(..., checkpoint_format="orbax")`` (the formats are
registered stores, :mod:`jaxrnn.io.store`). A trained model: :func:`jaxrnn.models.save_model`.

Typical use::

    opt = jaxrnn.train.make_optimizer(1e-3, clip_norm=1.0)   # optax chain: clip + adam
    result = jaxrnn.train.fit(apply, params, "softmax_cross_entropy", opt,
                              {"inputs": x, "targets": y}, val_data={...}, epochs=10,
                              metrics=["accuracy"], patience=3, plot_path="curves.png",
                              checkpoint_dir="ckpt", resume=True)
    result.history["val_accuracy"]

Compilation and placement: every step is compiled by :func:`jaxrnn.train.step.compile_step`, the
single hook point for sharding (data parallelism) over devices.
"""

from jaxrnn.lazy import lazy_exports

# Loaded on first use (PEP 562): `import jaxrnn` builds models without paying for
# optax, tqdm, flax serialization or Orbax; `from jaxrnn.train import fit` still works.
_LAZY = {
    'Checkpoint': ('jaxrnn.io', 'Checkpoint'),
    'CheckpointError': ('jaxrnn.io', 'CheckpointError'),
    'latest_checkpoint': ('jaxrnn.io', 'latest_checkpoint'),
    'load_checkpoint': ('jaxrnn.io', 'load_checkpoint'),
    'save_checkpoint': ('jaxrnn.io', 'save_checkpoint'),
    'Callback': ('jaxrnn.train.callbacks', 'Callback'),
    'Monitor': ('jaxrnn.train.callbacks', 'Monitor'),
    'NonFiniteLossError': ('jaxrnn.train.epochs', 'NonFiniteLossError'),
    'FitResult': ('jaxrnn.train.loop', 'FitResult'),
    'evaluate': ('jaxrnn.train.loop', 'evaluate'),
    'evaluate_with': ('jaxrnn.train.loop', 'evaluate_with'),
    'fit': ('jaxrnn.train.loop', 'fit'),
    'plot_history': ('jaxrnn.train.loop', 'plot_history'),
    'predict': ('jaxrnn.train.loop', 'predict'),
    'LOSSES': ('jaxrnn.train.losses', 'LOSSES'),
    'binary_cross_entropy_with_logits': ('jaxrnn.train.losses', 'binary_cross_entropy_with_logits'),
    'get_loss': ('jaxrnn.train.losses', 'get_loss'),
    'masked_mean': ('jaxrnn.train.losses', 'masked_mean'),
    'mse': ('jaxrnn.train.losses', 'mse'),
    'softmax_cross_entropy': ('jaxrnn.train.losses', 'softmax_cross_entropy'),
    'METRICS': ('jaxrnn.train.metrics', 'METRICS'),
    'Metric': ('jaxrnn.train.metrics', 'Metric'),
    'accuracy': ('jaxrnn.train.metrics', 'accuracy'),
    'bits_per_character': ('jaxrnn.train.metrics', 'bits_per_character'),
    'get_metric': ('jaxrnn.train.metrics', 'get_metric'),
    'mae': ('jaxrnn.train.metrics', 'mae'),
    'nrmse': ('jaxrnn.train.metrics', 'nrmse'),
    'perplexity': ('jaxrnn.train.metrics', 'perplexity'),
    'rmse': ('jaxrnn.train.metrics', 'rmse'),
    'LoopOptions': ('jaxrnn.train.options', 'LoopOptions'),
    'TrainState': ('jaxrnn.train.step', 'TrainState'),
    'compile_step': ('jaxrnn.train.step', 'compile_step'),
    'init_train_state': ('jaxrnn.train.step', 'init_train_state'),
    'make_eval_step': ('jaxrnn.train.step', 'make_eval_step'),
    'make_optimizer': ('jaxrnn.train.step', 'make_optimizer'),
    'make_train_step': ('jaxrnn.train.step', 'make_train_step'),
    'skip_nonfinite_updates': ('jaxrnn.train.step', 'skip_nonfinite_updates'),
    'supervised_objective': ('jaxrnn.train.step', 'supervised_objective'),
    'batchify': ('jaxrnn.train.tbptt', 'batchify'),
    'chunk_objective': ('jaxrnn.train.tbptt', 'chunk_objective'),
    'evaluate_stream': ('jaxrnn.train.tbptt', 'evaluate_stream'),
    'fit_stream': ('jaxrnn.train.tbptt', 'fit_stream'),
    'make_tbptt_step': ('jaxrnn.train.tbptt', 'make_tbptt_step'),
    'stream_chunks': ('jaxrnn.train.tbptt', 'stream_chunks'),
    'train_stream': ('jaxrnn.train.tbptt', 'train_stream'),
    'zeros_carry': ('jaxrnn.train.tbptt', 'zeros_carry'),
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "LoopOptions",
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "fit",
    "evaluate",
    "evaluate_with",
    "predict",
    "plot_history",
    "FitResult",
    "NonFiniteLossError",
    "Callback",
    "Monitor",
    "LOSSES",
    "get_loss",
    "masked_mean",
    "mse",
    "binary_cross_entropy_with_logits",
    "softmax_cross_entropy",
    "METRICS",
    "Metric",
    "get_metric",
    "accuracy",
    "bits_per_character",
    "perplexity",
    "rmse",
    "mae",
    "nrmse",
    "TrainState",
    "init_train_state",
    "make_optimizer",
    "skip_nonfinite_updates",
    "make_train_step",
    "make_eval_step",
    "supervised_objective",
    "compile_step",
    "batchify",
    "stream_chunks",
    "zeros_carry",
    "chunk_objective",
    "make_tbptt_step",
    "train_stream",
    "evaluate_stream",
    "fit_stream",
]
