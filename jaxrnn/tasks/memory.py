"""The vanishing-gradient demonstration: the adding problem and the copy task.

One command trains every cell in ``--cells`` (default Elman, LSTM, GRU) on the same budget -- the
same number of Adam steps (``--steps``), batch size, hidden size, learning rate and gradient
clipping -- at every sequence length in ``--lengths`` (default 50, 100, 200), and prints a table of
the final held-out loss against the memoryless baseline. Fresh training batches are generated from
the PRNG key at every step (:mod:`jaxrnn.datasets.synthetic`); the held-out set is a fixed batch
drawn from a different key.

* ``--problem adding``: mean squared error of the predicted sum; the baseline of always
  predicting 1 is ``Var(U1 + U2) = 1/6 = 0.167``; "solved" means MSE < 0.01.
* ``--problem copy``: cross-entropy per step in nats against ``length * ln(n) / T`` and the
  accuracy of the recalled symbols against chance ``1/n``; "solved" means >= 99% recalled.

A run stops early once its held-out loss has stayed solved for two evaluations in a row (the
budget is a cap, the same for every cell), so solved lengths cost little. The learning curves of
every run go to one PNG. Each run takes seconds to minutes and draws fresh sequences every step,
so this task writes no checkpoints: ``--resume`` is refused by name.

Why it works this way (Hochreiter 1991; Bengio, Simard & Frasconi 1994): the error signal that
reaches the first marked value through an Elman net is multiplied by the recurrent Jacobian once
per step and vanishes over ``T/2`` or more steps, so the net learns only the mean; the LSTM's
additive cell state carries it unattenuated while the forget gate stays open.
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp

from jaxrnn.tasks.common import clip_norm, task_optimizer

DESCRIPTION = ("adding problem / copy task: Elman vs LSTM vs GRU at T = 50, 100, 200 on the "
               "same budget; prints a table of held-out MSE against the 0.167 baseline")
DEFAULTS = {"hidden": 64, "batch_size": 64, "lr": 1e-2, "epochs": 1}
PLOT_FILE = "memory_curves.png"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--lengths: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 2:
        raise ValueError(f"--lengths: expected integers >= 2, got {text!r}")
    return values


def add_arguments(parser) -> None:
    g = parser.add_argument_group(
        "memory task",
        "Every (cell, T) run draws fresh sequences at each step and takes seconds to minutes, "
        "so this task keeps no checkpoints and refuses --resume (run it again instead).")
    g.add_argument("--problem", choices=("adding", "copy"), default="adding",
                   help="adding problem (MSE) or copy task (recall accuracy); default adding")
    g.add_argument("--lengths", default="50,100,200",
                   help="sequence lengths T (adding) or delays (copy), comma-separated")
    g.add_argument("--cells", default="elman,lstm,gru",
                   help="cells to compare, comma-separated (default elman,lstm,gru)")
    g.add_argument("--steps", type=int, default=1500,
                   help="budget: Adam steps per (cell, T) run (default 1500)")
    g.add_argument("--eval-every", type=int, default=100,
                   help="evaluate on the held-out batch every N steps (default 100)")
    g.add_argument("--eval-size", type=int, default=1000,
                   help="held-out sequences (default 1000)")
    g.add_argument("--verbose", action="store_true",
                   help="print every held-out evaluation")
    g.add_argument("--copy-length", type=int, default=10,
                   help="copy task: symbols to remember (default 10)")
    g.add_argument("--copy-symbols", type=int, default=8,
                   help="copy task: alphabet size (default 8)")


# --------------------------------------------------------------------------- models

def make_model(cell_name: str, hidden: int, n_in: int, n_out: int, *, per_step: bool):
    """``(init, apply)``: ``cell_name`` over the inputs, then a dense readout of the last output
    (``per_step=False``, ``(B, n_out)``) or of every output (``(B, T, n_out)``)."""
    from jaxrnn.layers import dense, recurrent
    from jaxrnn.train.models import make_cell

    layer = recurrent(make_cell(cell_name, hidden))
    head = dense(n_out)

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"rnn": layer.init(k1, n_in), "head": head.init(k2, layer.output_size)}

    def apply(params, xs):
        ys = layer.apply(params["rnn"], xs)
        return head.apply(params["head"], ys if per_step else ys[:, -1])

    return init, apply


class Problem:
    """Everything that differs between the adding problem and the copy task."""

    def __init__(self, name: str, T: int, args):
        from jaxrnn.datasets import synthetic

        self.name, self.T = name, T
        if name == "adding":
            self.n_in, self.n_out, self.per_step = 2, 1, False
            self.baseline = synthetic.ADDING_BASELINE_MSE
            self.make = lambda key, b: synthetic.adding_problem(key, b, T)
        else:
            L, n = args.copy_length, args.copy_symbols
            self.n_in, self.n_out, self.per_step = n + 2, n + 1, True
            self.chance = 1.0 / n
            self.baseline = synthetic.copy_baseline_cross_entropy(T, length=L, n_symbols=n)
            self.make = lambda key, b: synthetic.copy_task(key, b, T, length=L, n_symbols=n)

    def features(self, batch):
        if self.name == "adding":
            return batch.inputs
        return jax.nn.one_hot(batch.inputs, self.n_in)

    def loss(self, outputs, batch):
        from jaxrnn.train.losses import mse, softmax_cross_entropy

        if self.name == "adding":
            return mse(outputs, batch.targets)
        return softmax_cross_entropy(outputs, batch.targets)

    def score(self, outputs, batch) -> dict:
        """Held-out numbers: ``loss`` and, for copy, ``recall`` (accuracy on recall steps)."""
        out = {"loss": self.loss(outputs, batch)}
        if self.name == "copy":
            hit = (jnp.argmax(outputs, -1) == batch.targets) & batch.mask
            out["recall"] = jnp.sum(hit) / jnp.sum(batch.mask)
        return out

    def solved(self, scores) -> bool:
        if self.name == "adding":
            return scores["loss"] < 0.01
        return scores["recall"] >= 0.99


def train_one(problem: Problem, cell_name: str, args, seed: int) -> dict:
    """Train one cell on one problem; return its curve and final held-out scores."""
    from jaxrnn.train import init_train_state, make_train_step

    init, apply = make_model(cell_name, args.hidden, problem.n_in, problem.n_out,
                             per_step=problem.per_step)
    key = jax.random.key(seed)
    k_init, k_data, k_eval = jax.random.split(key, 3)
    optimizer = task_optimizer(args)
    state = init_train_state(init(k_init), optimizer, seed)

    def objective(params, batch, key, deterministic):
        outputs = apply(params, batch["inputs"])
        return problem.loss(outputs, batch["raw"]), outputs

    train_step = make_train_step(None, None, optimizer, objective=objective,
                                 data_parallel=getattr(args, "data_parallel", None))
    make_batch = jax.jit(lambda k: problem.make(k, args.batch_size))
    held_out = problem.make(k_eval, args.eval_size)
    held_x = problem.features(held_out)
    evaluate = jax.jit(lambda p: problem.score(apply(p, held_x), held_out))

    from tqdm.auto import tqdm

    curve, streak, t0 = [], 0, time.perf_counter()
    scores = {k: float(v) for k, v in evaluate(state.params).items()}
    curve.append((0, scores["loss"]))
    bar = tqdm(range(1, args.steps + 1), desc=f"{cell_name} T={problem.T}", leave=False,
               disable=not args.progress, dynamic_ncols=True)
    for step in bar:
        raw = make_batch(jax.random.fold_in(k_data, step))
        state, _ = train_step(state, {"inputs": problem.features(raw), "targets": raw.targets,
                                      "raw": raw})
        if step % args.eval_every == 0 or step == args.steps:
            scores = {k: float(v) for k, v in evaluate(state.params).items()}
            curve.append((step, scores["loss"]))
            bar.set_postfix_str(f"held-out loss {scores['loss']:.4f}")
            if getattr(args, "verbose", False):
                bar.write(f"    {cell_name} T={problem.T} step {step}: held-out loss "
                          f"{scores['loss']:.4f}")
            if not math.isfinite(scores["loss"]):
                break
            streak = streak + 1 if problem.solved(scores) else 0
            if streak >= 2:
                break
    bar.close()
    return {"cell": cell_name, "T": problem.T, "steps": step, "curve": curve,
            "seconds": time.perf_counter() - t0, "params": state.params,
            "config": {"cell": cell_name, "hidden": args.hidden, "n_in": problem.n_in,
                       "n_out": problem.n_out, "per_step": problem.per_step}, **scores}


# --------------------------------------------------------------------------- report

def format_table(results: list[dict], problem: str, lengths: list[int], cells: list[str],
                 baselines: dict[int, float]) -> str:
    """The table of final held-out losses: one row per cell, one column per length."""
    by = {(r["cell"], r["T"]): r for r in results}
    what = "MSE" if problem == "adding" else "CE/step (recall)"
    head = f"{'cell':<16}" + "".join(f"{'T=' + str(T):>22}" for T in lengths)
    lines = [f"held-out {what} after at most the same budget (solved: "
             f"{'MSE < 0.01' if problem == 'adding' else 'recall >= 99%'})", head]
    for cell in cells:
        row = f"{cell:<16}"
        for T in lengths:
            r = by.get((cell, T))
            if r is None:
                row += f"{'-':>22}"
                continue
            mark = "*" if (r["loss"] < 0.01 if problem == "adding" else r["recall"] >= 0.99) \
                else " "
            val = f"{r['loss']:.4f}" if problem == "adding" else \
                f"{r['loss']:.3f} ({100 * r['recall']:.0f}%)"
            row += f"{val + mark + ' @' + str(r['steps']):>22}"
        lines.append(row)
    base = f"{'baseline':<16}" + "".join(
        f"{(f'{baselines[T]:.4f}' if problem == 'adding' else f'{baselines[T]:.3f} (12%)'):>22}"
        for T in lengths)
    lines.append(base)
    lines.append("(* solved; @ steps used of the budget; baseline: "
                 + ("predict the mean, 1/6)" if problem == "adding"
                    else "blanks then uniform guesses, recall = chance)"))
    return "\n".join(lines)


def plot_curves(results: list[dict], path: str, problem: str, baselines: dict[int, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lengths = sorted({r["T"] for r in results})
    fig = Figure(figsize=(4.5 * len(lengths), 3.6))
    FigureCanvasAgg(fig)
    for i, T in enumerate(lengths):
        ax = fig.add_subplot(1, len(lengths), i + 1)
        for r in (r for r in results if r["T"] == T):
            steps, losses = zip(*r["curve"], strict=True)
            ax.plot(steps, losses, label=r["cell"])
        ax.axhline(baselines[T], color="grey", ls="--", label="baseline")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("held-out " + ("MSE" if problem == "adding" else "cross-entropy"))
        ax.set_title(f"{problem}, T = {T}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def architecture(config):
    """:func:`make_model` of ``config`` (registered: :func:`jaxrnn.models.architecture`
    rebuilds it from a model directory ``OUT/models/CELL_T<T>``)."""
    from jaxrnn.train.models import fixed_shape_model

    return fixed_shape_model(*make_model(config["cell"], config["hidden"], config["n_in"],
                                         config["n_out"], per_step=config["per_step"]))


def train(args) -> dict:
    from jaxrnn.tasks import modeldir
    from jaxrnn.tasks.common import fail

    if getattr(args, "resume", False):
        fail("--resume", "task memory keeps no checkpoints (each run takes seconds to minutes "
                         "on freshly drawn sequences); run it again without --resume")
    from jaxrnn.train.models import CELLS

    lengths = _int_list(args.lengths)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if not cells or unknown:
        raise ValueError(f"--cells: expected names from {sorted(CELLS)}, got {args.cells!r}")
    for name in ("steps", "eval_every", "eval_size", "copy_length", "copy_symbols"):
        v = getattr(args, name)
        if v < (2 if name == "copy_symbols" else 1):
            raise ValueError(f"--{name.replace('_', '-')}: expected a positive integer, got {v}")
    clip_norm(args)  # validated before any data is read
    t0 = time.perf_counter()
    print(f"memory/{args.problem}: cells {cells}, T {lengths}; budget per run: {args.steps} "
          f"steps x batch {args.batch_size}, hidden {args.hidden}, Adam lr {args.lr}, "
          f"clip {clip_norm(args)}")
    results, baselines = [], {}
    for T in lengths:
        problem = Problem(args.problem, T, args)
        baselines[T] = problem.baseline
        for cell in cells:
            r = train_one(problem, cell, args, args.seed)
            # one model directory per (cell, T) run: this task compares many trained models
            r["model"] = modeldir.save_task(
                args, task="memory", config=r.pop("config"), params=r.pop("params"),
                metrics={k: v for k, v in r.items() if k != "curve"},
                preprocessing={"problem": args.problem, "T": T},
                directory=os.path.join(args.out, "models", f"{cell}_T{T}"))
            results.append(r)
            extra = f", recall {100 * r['recall']:.1f}%" if args.problem == "copy" else ""
            print(f"  {cell:<6} T={T:<4} held-out loss {r['loss']:.4f} (baseline "
                  f"{problem.baseline:.4f}){extra} after {r['steps']} steps, "
                  f"{r['seconds']:.0f} s", flush=True)
    table = format_table(results, args.problem, lengths, cells, baselines)
    print(table)
    plot = plot_curves(results, os.path.join(args.out, PLOT_FILE), args.problem, baselines)
    print(f"learning curves: {plot}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return {"results": [{k: v for k, v in r.items() if k != "curve"} for r in results],
            "baselines": baselines, "table": table, "plot": plot}
