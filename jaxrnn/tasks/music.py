r"""Bach chorales as piano rolls: a recurrent model of the next time step, and a generated chorale.

Data: the four-voice Bach chorales of music21's corpus (:mod:`jaxrnn.datasets.chorales`, about
360), on a grid of eighth notes (``--grid 0.5`` quarter notes; 0.25 for sixteenths), pitches
restricted to the corpus' range (MIDI 36-81, 46 keys). A roll ``x_t \in \{0, 1\}^P`` marks the
sounding pitches at step ``t``. The chorales are split (seeded) 80/10/10 into train, validation
and test *chorales*.

Model (Boulanger-Lewandowski, Bengio & Vincent 2012, the RNN baseline): recurrent stack over
``x_1..x_{t}`` -> dense ``P`` logits ``z_t``; each pitch of the next step is an independent
Bernoulli,

.. math:: -\log p(x_{t+1} \mid x_{\le t}) = \sum_{p=1}^{P} \mathrm{BCE}(z_{t,p}, x_{t+1,p}),

the negative log-likelihood per step in nats reported on the held-out chorales (training
sequences are cut into pieces of ``--max-len`` steps; evaluation runs each chorale whole, with
its length masked). Baselines on the same test steps: every pitch independent with its training
frequency, and a per-pitch first-order Markov chain ``p(x_{t+1,p} = 1 | x_{t,p})`` from training
counts (add-one smoothed) -- the "hold what sounds now" model a net has to beat.

Generation: the model is primed with the first bar of a test chorale and sampled step by step
(each pitch a Bernoulli draw from ``sigmoid(z / temperature)``, at most four notes kept, the most
probable first -- the independent-pitch model cannot enforce four voices on its own); the result is
written to MIDI with music21.
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.tasks.common import clip_norm, task_optimizer

DESCRIPTION = ("Bach chorales (music21 corpus) as piano rolls: next-step model, held-out NLL per "
               "step vs baselines, generated chorale written to MIDI")
DEFAULTS = {"epochs": 60, "hidden": 128, "lr": 3e-3, "batch_size": 16}
PLOT_FILE = "music_curves.png"
MIDI_FILE = "generated_chorale.mid"


def add_arguments(parser) -> None:
    g = parser.add_argument_group("music task")
    g.add_argument("--grid", type=float, default=0.5,
                   help="time step in quarter notes (0.5 eighths, 0.25 sixteenths)")
    g.add_argument("--max-len", type=int, default=64,
                   help="training pieces of at most this many steps (default 64)")
    g.add_argument("--patience", type=int, default=8,
                   help="early stopping: epochs without validation improvement (default 8)")
    g.add_argument("--limit", type=int, default=None,
                   help="use only the first N chorales (smoke tests)")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="generation: sampling temperature (default 1.0)")
    g.add_argument("--length", type=int, default=64,
                   help="generation: steps to generate after the primer (default 64)")
    g.add_argument("--max-notes", type=int, default=4,
                   help="generation: at most this many notes per step (default 4)")
    g.add_argument("--midi", default=None,
                   help=f"generation: output MIDI file (default OUT/{MIDI_FILE})")


# --------------------------------------------------------------------------- data

def split_chorales(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Chorale indices, seeded permutation cut 80/10/10 (at least one chorale each)."""
    if n < 3:
        raise ValueError(f"chorales: need at least 3 to split, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(0.1 * n)))
    n_val = max(1, int(round(0.1 * n)))
    return {"test": order[:n_test], "val": order[n_test:n_test + n_val],
            "train": order[n_test + n_val:]}


def next_step_data(rolls, max_len: int | None) -> dict[str, np.ndarray]:
    """Inputs ``roll[t]`` and targets ``roll[t+1]``, post-padded: ``{"inputs", "targets":
    (N, T, P) float32, "lengths": (N,), "mask": (N, T) bool}``. With ``max_len`` each chorale
    is cut into consecutive pieces of at most ``max_len`` steps (training); without, one row per
    chorale (evaluation)."""
    from jaxrnn.data import mask_from_lengths, pad_sequences

    xs, ys = [], []
    for r in rolls:
        x, y = r[:-1], r[1:]
        step = max_len or len(x)
        for a in range(0, len(x), step):
            if len(x[a:a + step]):
                xs.append(x[a:a + step])
                ys.append(y[a:a + step])
    T = max(len(x) for x in xs)
    inputs, lengths = pad_sequences(xs, maxlen=T, dtype="float32", return_lengths=True)
    targets = pad_sequences(ys, maxlen=T, dtype="float32")
    return {"inputs": inputs, "targets": targets, "lengths": lengths,
            "mask": mask_from_lengths(lengths, T)}


def _bernoulli_nll(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(-1)


def baseline_nll(train_rolls, test_rolls) -> dict[str, float]:
    """Mean NLL per predicted step (nats) on ``test_rolls`` of two count-based models fitted on
    ``train_rolls``: independent pitch frequencies, and a per-pitch Markov chain."""
    frames = np.concatenate(train_rolls)
    freq = (frames.sum(0) + 1.0) / (len(frames) + 2.0)
    prev = np.concatenate([r[:-1] for r in train_rolls])
    nxt = np.concatenate([r[1:] for r in train_rolls])
    on_after_on = ((prev * nxt).sum(0) + 1.0) / (prev.sum(0) + 2.0)
    on_after_off = (((1 - prev) * nxt).sum(0) + 1.0) / ((1 - prev).sum(0) + 2.0)
    t_prev = np.concatenate([r[:-1] for r in test_rolls])
    t_next = np.concatenate([r[1:] for r in test_rolls])
    p_markov = t_prev * on_after_on + (1 - t_prev) * on_after_off
    return {
        "frequency": float(_bernoulli_nll(np.broadcast_to(freq, t_next.shape), t_next).mean()),
        "markov": float(_bernoulli_nll(p_markov, t_next).mean()),
    }


# --------------------------------------------------------------------------- model

class MusicParams(NamedTuple):
    rnn: Any
    head: Any


def make_model(config):
    """``(stack, head, init, apply)``: ``apply(params, rolls (B, T, P), *, lengths, key,
    deterministic) -> logits (B, T, P)``; ``stack``/``head`` are used step by step in
    generation."""
    from jaxrnn.layers import dense
    from jaxrnn.train.models import recurrent_stack

    P = config["n_pitches"]
    stack = recurrent_stack(config["cell"], config["hidden"], layers=config["layers"],
                            dropout_rate=config["dropout"])
    head = dense(P)

    def init(key):
        k1, k2 = jax.random.split(key)
        return MusicParams(stack.init(k1, P), head.init(k2, stack.output_size))

    def apply(params, rolls, *, lengths=None, key=None, deterministic=True):
        h = stack.apply(params.rnn, rolls, lengths=lengths, key=key,
                           deterministic=deterministic)
        return head.apply(params.head, h)

    return stack, head, init, apply


def architecture(config):
    """``init``/``apply`` of :func:`make_model` (registered: :func:`jaxrnn.models.architecture`
    rebuilds it from the model directory)."""
    from jaxrnn.train.models import fixed_shape_model

    _, _, init, apply = make_model(config)
    return fixed_shape_model(init, apply)


def nll_per_step_loss(n_pitches: int):
    """The training loss: masked mean BCE over steps and pitches, times ``P`` = NLL per step."""
    from jaxrnn.train.losses import binary_cross_entropy_with_logits

    def loss(logits, targets, mask=None):
        return n_pitches * binary_cross_entropy_with_logits(logits, targets, mask)

    return loss


def sample_continuation(config, params, primer: np.ndarray, steps: int, *, key,
                        temperature: float = 1.0, max_notes: int = 4) -> np.ndarray:
    """The primer ``(T0, P)`` followed by ``steps`` sampled steps, ``(T0 + steps, P)``."""
    if temperature <= 0:
        raise ValueError(f"temperature: expected a positive number, got {temperature}")
    if steps < 1 or max_notes < 1:
        raise ValueError(f"steps, max_notes: expected positive integers, got {steps}, "
                         f"{max_notes}")
    stack, head, _, _ = make_model(config)

    @jax.jit
    def advance(params, carry, x):
        carry, h = stack.apply_with_carry(params.rnn, x[None, None, :], carry=carry)
        return carry, head.apply(params.head, h[0, -1])

    @jax.jit
    def draw(logits, key):
        probs = jax.nn.sigmoid(logits / temperature)
        on = jax.random.bernoulli(key, probs)
        # Keep at most `max_notes` of the drawn pitches, the most probable first.
        rank = jnp.argsort(jnp.argsort(-jnp.where(on, probs, -1.0)))
        return (on & (rank < max_notes)).astype(jnp.float32)

    carry = None
    for x in primer[:-1]:
        carry, _ = advance(params, carry, jnp.asarray(x))
    x = jnp.asarray(primer[-1])
    out = [np.asarray(r) for r in primer]
    for i in range(steps):
        carry, logits = advance(params, carry, x)
        x = draw(logits, jax.random.fold_in(key, i))
        out.append(np.asarray(x))
    return np.stack(out)


# --------------------------------------------------------------------------- commands

def _load(args):
    from jaxrnn.datasets.chorales import load_chorales

    if args.limit is not None and args.limit < 3:
        raise ValueError(f"--limit: expected at least 3 chorales, got {args.limit}")
    return load_chorales(step=args.grid, limit=args.limit)


def _rolls(chorales, low, P):
    from jaxrnn.datasets.chorales import notes_to_roll

    return [notes_to_roll(n, low, P) for n in chorales.notes]


def _write_sample(config, params, test_roll, args, path) -> tuple[str, int]:
    from jaxrnn.datasets.chorales import midi_to_notes, notes_to_midi, roll_to_notes

    primer_len = min(int(round(4 / config["grid"])), len(test_roll))  # one 4/4 bar
    roll = sample_continuation(config, params, test_roll[:primer_len], args.length,
                               key=jax.random.key(args.seed), temperature=args.temperature,
                               max_notes=args.max_notes)
    notes = roll_to_notes(roll, config["low"])
    if len(notes) == 0:
        raise ValueError("generation produced no notes; try a higher --temperature")
    notes_to_midi(notes, path, step=config["grid"])
    back = midi_to_notes(path, step=config["grid"])
    return path, len(back)


def train(args) -> dict:
    from jaxrnn.datasets.chorales import pitch_range
    from jaxrnn.tasks import modeldir
    from jaxrnn.train import evaluate, fit

    clip_norm(args)  # validated before any data is read
    if args.max_len < 2:
        raise ValueError(f"--max-len: expected an integer >= 2, got {args.max_len}")
    t0 = time.perf_counter()
    chorales = _load(args)
    low, P = pitch_range(chorales)
    rolls = _rolls(chorales, low, P)
    idx = split_chorales(len(rolls))
    part = {k: [rolls[i] for i in v] for k, v in idx.items()}
    train_data = next_step_data(part["train"], args.max_len)
    val_data = next_step_data(part["val"], None)
    test_data = next_step_data(part["test"], None)
    config = {"cell": args.cell, "hidden": args.hidden, "layers": args.layers,
              "dropout": args.dropout, "n_pitches": P, "low": low, "grid": args.grid}
    _, _, init, apply = make_model(config)
    loss = nll_per_step_loss(P)
    print(f"music: {len(rolls)} chorales ({', '.join(f'{k} {len(v)}' for k, v in idx.items())}),"
          f" grid {args.grid} quarter notes, pitches MIDI {low}-{low + P - 1} ({P}); "
          f"{args.cell} x{args.layers} hidden {args.hidden}")
    result = fit(
        apply, init(jax.random.key(args.seed)), loss,
        task_optimizer(args), train_data, val_data=val_data,
        epochs=args.epochs, batch_size=min(args.batch_size, len(train_data["targets"])),
        seed=args.seed, patience=args.patience, checkpoint_dir=args.checkpoint_dir,
        resume=args.resume, progress=args.progress,
        data_parallel=getattr(args, "data_parallel", None),
        plot_path=os.path.join(args.out, PLOT_FILE),
    )
    test = evaluate(apply, result.params, loss, test_data)
    base = baseline_nll(part["train"], part["test"])
    model_path = modeldir.save_task(
        args, task="music", config=config, params=result.params,
        metrics={"test_nll": test["loss"], "baselines": base})
    midi, n_notes = _write_sample(config, result.params, part["test"][0], args,
                                  args.midi or os.path.join(args.out, MIDI_FILE))
    seconds = time.perf_counter() - t0
    print(f"test NLL per step: {test['loss']:.3f} nats on {int(test_data['mask'].sum())} steps "
          f"of {len(idx['test'])} held-out chorales (baselines: pitch frequencies "
          f"{base['frequency']:.3f}, per-pitch Markov chain {base['markov']:.3f}); "
          f"{seconds:.0f} s")
    print(f"generated chorale: {midi} ({n_notes} notes)")
    print(f"learning curves: {result.plot_path}")
    print(f"model: {model_path}")
    return {"test_nll": test["loss"], "baselines": base, "midi": midi,
            "plot": result.plot_path, "model": model_path, "seconds": seconds}


def _load_model(args):
    from jaxrnn.tasks import modeldir

    saved = modeldir.load_task(args, task="music")
    return modeldir.config_of(saved), saved.params, saved.model.apply, saved.directory


def evaluate(args) -> dict:
    from jaxrnn.train import evaluate as evaluate_params

    config, params, apply, path = _load_model(args)
    args.grid = config["grid"]
    rolls = _rolls(_load(args), config["low"], config["n_pitches"])
    test = [rolls[i] for i in split_chorales(len(rolls))["test"]]
    data = next_step_data(test, None)
    out = evaluate_params(apply, params, nll_per_step_loss(config["n_pitches"]), data)
    print(f"test NLL per step: {out['loss']:.3f} nats ({len(test)} held-out chorales; "
          f"model {path})")
    return {"test_nll": out["loss"]}


def generate(args) -> str:
    config, params, _, _ = _load_model(args)
    args.grid = config["grid"]
    rolls = _rolls(_load(args), config["low"], config["n_pitches"])
    primer = rolls[split_chorales(len(rolls))["test"][0]]
    midi, n_notes = _write_sample(config, params, primer, args,
                                  args.midi or os.path.join(args.out, MIDI_FILE))
    print(f"generated chorale: {midi} ({n_notes} notes, {args.length} steps after a one-bar "
          f"primer, temperature {args.temperature})")
    return midi
