"""Next-frame prediction of moving digits with a stacked ConvLSTM (Shi et al. 2015).

Data, generated in-process with a seed: scikit-learn's ``load_digits`` 8x8 images (the only
download-free digit set on PyPI) bouncing around a larger frame, two digits per sequence, each
with its own constant velocity reflected at the walls, composed by pixel-wise max (as in
Srivastava et al. 2015's Moving MNIST). Training sequences use the first 1,400 digit images, test
sequences the remaining 397, so test digits and trajectories are both unseen.

Model: frames -> ConvLSTM layers (run time-major on the common engine) -> 1x1 convolution over the
concatenated layer outputs -> sigmoid, predicting frame ``t + 1`` from frames ``0..t``. Metric:
per-frame mean squared error of the predicted frames on the test sequences, beside the baseline
that copies the last seen frame; also a closed-loop rollout (the model fed its own predictions
for the second half of each sequence) against copying the last seen frame for every future step.
A PNG strip shows input, predicted and true frames.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DESCRIPTION = "next-frame prediction of bouncing digits with a ConvLSTM; MSE vs copy-last-frame"

DIGIT = 8  # load_digits images are 8 x 8
N_TRAIN_DIGITS = 1400


# --------------------------------------------------------------------------- data

def load_digit_images():
    """``(1797, 8, 8)`` float32 images in ``[0, 1]``."""
    from jaxrnn.data.deps import require

    datasets = require(
        "sklearn.datasets", pip_name="scikit-learn", purpose="the moving_digits task"
    )
    return (datasets.load_digits().images / 16.0).astype(np.float32)


def moving_digits(images, n, *, frames=10, size=24, digits=2, max_speed=2.0, seed=0):
    """``n`` sequences ``(n, frames, size, size)`` float32 in ``[0, 1]``.

    Each of ``digits`` images (drawn from ``images``) starts at a random position with a random
    velocity of at most ``max_speed`` pixels per frame per axis (at least 0.5 in norm), moves in a
    straight line and bounces off the frame's edges; positions are rounded to whole pixels.
    """
    if size < DIGIT:
        raise ValueError(f"size: the frame must be at least {DIGIT} pixels, got {size}")
    if frames < 2 or n < 1 or digits < 1:
        raise ValueError(
            f"frames, n, digits: expected frames >= 2, n >= 1, digits >= 1; got {frames}, {n}, "
            f"{digits}"
        )
    rng = np.random.default_rng(seed)
    lim = size - DIGIT
    out = np.zeros((n, frames, size, size), np.float32)
    for i in range(n):
        for _ in range(digits):
            img = images[rng.integers(len(images))]
            pos = rng.uniform(0, lim, size=2)
            while True:
                vel = rng.uniform(-max_speed, max_speed, size=2)
                if np.hypot(*vel) >= 0.5:
                    break
            for t in range(frames):
                r, c = np.rint(pos).astype(int)
                np.maximum(out[i, t, r : r + DIGIT, c : c + DIGIT], img,
                           out=out[i, t, r : r + DIGIT, c : c + DIGIT])
                pos = pos + vel
                for a in range(2):  # reflect at the walls
                    if pos[a] < 0:
                        pos[a], vel[a] = -pos[a], -vel[a]
                    elif pos[a] > lim:
                        pos[a], vel[a] = 2 * lim - pos[a], -vel[a]
    return out


# --------------------------------------------------------------------------- model

class ModelParams(NamedTuple):
    layers: tuple  # ConvLSTMParams per layer
    w_out: jax.Array  # (sum of channels, 1): 1x1 convolution to one output channel
    b_out: jax.Array  # (1,)


def build(channels, layers, kernel_size):
    from jaxrnn.cells.convlstm import convlstm

    cells = [convlstm(channels, kernel_size=kernel_size) for _ in range(layers)]

    def init(key):
        keys = jax.random.split(key, layers + 1)
        ps = tuple(
            c.init(k, 1 if i == 0 else channels)
            for i, (c, k) in enumerate(zip(cells, keys[:layers], strict=True))
        )
        w = jax.nn.initializers.glorot_uniform()(keys[-1], (channels * layers, 1), jnp.float32)
        return ModelParams(ps, w, jnp.zeros((1,), jnp.float32))

    def apply(params, frames, carries=None):
        """``frames (T, B, Hgt, Wd)`` -> predicted next frames ``(T, B, Hgt, Wd)`` in [0, 1] and
        the final carries (one per layer)."""
        import jaxrnn

        h = frames[..., None]
        outs, finals = [], []
        for i, (cell, p) in enumerate(zip(cells, params.layers, strict=True)):
            c0 = None if carries is None else carries[i]
            final, h = jaxrnn.run(cell, p, h, carry=c0, time_major=True)
            outs.append(h)
            finals.append(final)
        z = jnp.concatenate(outs, axis=-1) @ params.w_out + params.b_out
        return jax.nn.sigmoid(z[..., 0]), tuple(finals)

    return init, apply


def architecture(config):
    """:func:`build` of ``{"channels", "layers", "kernel_size"}`` (registered:
    :func:`jaxrnn.models.architecture` rebuilds it from the model directory)."""
    from jaxrnn.train.models import fixed_shape_model

    return fixed_shape_model(*build(config["channels"], config["layers"], config["kernel_size"]))


def next_frame_objective(apply):
    """The training objective of :func:`jaxrnn.train.fit` on ``{"inputs": frames[:, :-1],
    "targets": frames[:, 1:]}`` batches ``(B, T-1, H, W)``: per-pixel cross-entropy of the
    predicted next frames (targets are intensities in [0, 1]; stronger gradients than squared
    error on mostly-black frames; evaluated by MSE)."""

    def objective(params, batch, key, deterministic):
        pred, _ = apply(params, jnp.moveaxis(batch["inputs"], 1, 0))
        target = jnp.moveaxis(batch["targets"], 1, 0)
        p = jnp.clip(pred, 1e-6, 1 - 1e-6)
        return -jnp.mean(target * jnp.log(p) + (1 - target) * jnp.log1p(-p)), pred

    return objective


def fit_frames(args, apply, params, frames):
    """Train on ``frames (N, T, H, W)`` through :func:`jaxrnn.train.fit` (full batches only,
    one compiled shape), so ``--resume`` / ``--checkpoint-dir``, ``--data-parallel``,
    ``--time-budget`` and the non-finite guard work as for every task. Returns ``(params,
    steps, epochs, seconds)``."""
    from jaxrnn.tasks.common import fit_objective

    if len(frames) < args.batch_size:
        raise ValueError(f"--batch-size: {args.batch_size} is more than the "
                         f"{len(frames)} training sequences (--train-sequences)")
    return fit_objective(args, params, {"inputs": frames[:, :-1], "targets": frames[:, 1:]},
                         next_frame_objective(apply), batch_size=args.batch_size,
                         drop_remainder=True)


def rollout(apply, params, frames, n_seen):
    """Closed loop: read ``frames[:n_seen]``, then feed each prediction back for the remaining
    ``T - n_seen`` frames. Returns the predictions for frames ``n_seen..T-1``."""
    T = frames.shape[0]
    preds, carries = apply(params, frames[:n_seen])
    nxt = preds[-1]
    out = [nxt]
    for _ in range(T - n_seen - 1):
        p, carries = apply(params, nxt[None], carries)
        nxt = p[-1]
        out.append(nxt)
    return jnp.stack(out)


# --------------------------------------------------------------------------- CLI protocol

# Common options used: layers, hidden (ConvLSTM channels), epochs, batch_size, lr, seed, out.
# Sizes chosen so a training step costs about 0.5 CPU-seconds on this class of machine (XLA's CPU
# convolutions are slow for few channels; 16 channels with 5x5 kernels on 24x24 frames cost 40x).
DEFAULTS = {"hidden": 8, "layers": 2, "batch_size": 8, "lr": 3e-3, "epochs": 100}


def add_arguments(parser):
    g = parser.add_argument_group("moving_digits")
    g.add_argument("--frames", type=int, default=10, help="frames per sequence")
    g.add_argument("--size", type=int, default=20, help="frame height and width in pixels")
    g.add_argument("--digits", type=int, default=2, help="digits per sequence")
    g.add_argument("--kernel", type=int, default=3, help="ConvLSTM kernel size (odd)")
    g.add_argument("--train-sequences", type=int, default=2000)
    g.add_argument("--test-sequences", type=int, default=200)
    g.add_argument("--time-budget", type=float, default=300.0,
                   help="stop training after this many seconds")


def save_strip(frames, preds, path, n_seen):
    """Rows: input frames, predicted next frames (shifted to the time they predict), true frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = frames.shape[0]
    fig, axes = plt.subplots(3, T, figsize=(1.3 * T, 4.2))
    for t in range(T):
        axes[0, t].imshow(frames[t] if t < n_seen else np.zeros_like(frames[t]), cmap="gray",
                          vmin=0, vmax=1)
        axes[1, t].imshow(preds[t] if t >= 1 else np.zeros_like(frames[t]), cmap="gray", vmin=0,
                          vmax=1)
        axes[2, t].imshow(frames[t], cmap="gray", vmin=0, vmax=1)
        for r in range(3):
            axes[r, t].set_xticks([])
            axes[r, t].set_yticks([])
        axes[0, t].set_title(f"t={t}", fontsize=8)
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("predicted")
    axes[2, 0].set_ylabel("true")
    fig.suptitle(f"ConvLSTM: frames 1..{n_seen - 1} predicted one step ahead, "
                 f"{n_seen}..{T - 1} in closed loop", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(args) -> dict:
    t_start = time.perf_counter()
    if getattr(args, "cell", "lstm") != "lstm":
        print(f"moving_digits: --cell {args.cell} ignored; this task uses the ConvLSTM cell")
    images = load_digit_images()
    tr = moving_digits(images[:N_TRAIN_DIGITS], args.train_sequences, frames=args.frames,
                       size=args.size, digits=args.digits, seed=args.seed)
    te = moving_digits(images[N_TRAIN_DIGITS:], args.test_sequences, frames=args.frames,
                       size=args.size, digits=args.digits, seed=args.seed + 1)
    print(f"moving_digits: {len(tr)} train / {len(te)} test sequences of {args.frames} frames "
          f"{args.size}x{args.size}, {args.digits} digits each (test digits unseen); ConvLSTM "
          f"{args.layers} x {args.hidden} channels, kernel {args.kernel}")
    init, apply = build(args.hidden, args.layers, args.kernel)
    params = jax.jit(init)(jax.random.key(args.seed))
    params, n_steps, epoch, train_s = fit_frames(args, apply, params, tr)

    n_seen = args.frames // 2
    eval_one = jax.jit(lambda p, x: apply(p, x[:-1])[0])
    eval_roll = jax.jit(lambda p, x: rollout(apply, p, x, n_seen))
    mse_model = mse_copy = mse_roll = mse_roll_copy = 0.0
    B = 50
    for s in range(0, len(te), B):
        x = jnp.asarray(np.moveaxis(te[s : s + B], 1, 0))
        n = x.shape[1]
        pred = eval_one(params, x)
        mse_model += float(jnp.mean((pred - x[1:]) ** 2)) * n
        mse_copy += float(jnp.mean((x[:-1] - x[1:]) ** 2)) * n
        roll = eval_roll(params, x)
        mse_roll += float(jnp.mean((roll - x[n_seen:]) ** 2)) * n
        mse_roll_copy += float(jnp.mean((x[n_seen - 1][None] - x[n_seen:]) ** 2)) * n
    N = len(te)
    res = {
        "mse_model": mse_model / N, "mse_copy_last": mse_copy / N,
        "mse_rollout": mse_roll / N, "mse_rollout_copy_last": mse_roll_copy / N,
        "steps": n_steps,
    }
    print(f"test ({N} sequences, per-frame MSE over pixels in [0, 1]): next frame: ConvLSTM "
          f"{res['mse_model']:.5f} vs copy-last-frame {res['mse_copy_last']:.5f} "
          f"({res['mse_copy_last'] / res['mse_model']:.2f}x lower); "
          f"closed loop over frames {n_seen}..{args.frames - 1}: ConvLSTM {res['mse_rollout']:.5f}"
          f" vs copy-last-seen {res['mse_rollout_copy_last']:.5f}")
    x = jnp.asarray(np.moveaxis(te[:1], 1, 0))
    one = np.asarray(eval_one(params, x))[:, 0]
    roll = np.asarray(eval_roll(params, x))[:, 0]
    shown = np.concatenate([np.zeros_like(one[:1]), one[: n_seen - 1], roll])
    out = getattr(args, "out", None) or os.path.join("runs", "moving_digits")
    path = os.path.join(out, "moving_digits_frames.png")
    save_strip(np.asarray(x[:, 0]), shown, path, n_seen)
    total = time.perf_counter() - t_start
    print(f"frames: {path}\ntime: train {train_s:.0f}s ({n_steps} steps, {epoch} epochs), "
          f"total {total:.0f}s")
    res["seconds"] = total
    from jaxrnn.tasks import modeldir

    args.out = out
    res["model"] = modeldir.save_task(
        args, task="moving_digits", params=params, metrics=dict(res),
        config={"channels": args.hidden, "layers": args.layers, "kernel_size": args.kernel})
    print(f"model: {res['model']}")
    return res
