"""The jaxrnn command line: train, evaluate, generate and predict for each task; demo.

    jaxrnn train                                  # the default task (digits), progress bar,
                                                  # prints the test metric and the plot's path
    jaxrnn train --task NAME --cell gru --layers 2 --hidden 128 --epochs 5 --resume
    jaxrnn evaluate --task NAME                   # reload the trained model, print the metric
    jaxrnn generate --task NAME                   # for tasks that generate (e.g. text)
    jaxrnn predict --task NAME --model DIR --input FILE --output FILE.csv
    jaxrnn demo NAME

On your own data (each run writes one model directory, OUT/model by default, that
predict, evaluate and generate read with --model):

    jaxrnn train --task forecast --csv FILE --column NAME [--time-column NAME] [--period P]
    jaxrnn train --task classify --data FILE.csv|FILE.npz
    jaxrnn train --task sentiment --csv FILE --text-column C --label-column L
    jaxrnn train --task charlm --text FILE [FILE ...]

jaxrnn train --task NAME --help lists the options of a task (with their defaults).
"""
# (This docstring is the --help text.) Options common to every task are defined here
# (add_common_arguments); a task adds its own in add_arguments and may change the common
# defaults with a DEFAULTS dict.

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import signal
import sys
import threading

from jaxrnn.tasks import DEFAULT_TASK, DEMOS, TASKS

CELL_CHOICES = importlib.import_module("jaxrnn.cells.registry").names(cli=True)
TASK_COMMANDS = ("train", "evaluate", "generate", "predict")

# Defaults of the common options; a task's DEFAULTS dict overrides them.
COMMON_DEFAULTS = {
    "cell": "lstm",
    "layers": 1,
    "hidden": 64,
    "bidirectional": False,
    "dropout": 0.0,
    "epochs": 10,
    "batch_size": 32,
    "lr": 1e-3,
    "seed": 0,
    "checkpoint_dir": None,
    "resume": False,
    "clip_norm": 1.0,
    "skip_nonfinite": True,
    "out": None,
    "progress": True,
    "data_parallel": None,
    "overwrite": False,
}

# The common options only training reads: evaluate, generate and predict accept them (a
# command line edited from a train command still parses) but do not list them.
TRAINING_OPTIONS = {
    "cell", "layers", "hidden", "bidirectional", "dropout", "epochs", "batch_size", "lr",
    "clip_norm", "skip_nonfinite", "checkpoint_dir", "resume", "overwrite", "data_parallel",
    "num_processes", "process_id", "coordinator", "seeds", "patience",
}
# The defaults --help shows (the task's own, from its DEFAULTS).
SHOWN_DEFAULTS = ("cell", "layers", "hidden", "dropout", "epochs", "batch_size", "lr", "seed")


def _load(path: str):
    return importlib.import_module(path)


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0 (``nan`` and ``inf`` parse as floats but are rejected)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {v}")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {v}")
    return v


def directory_path(text: str) -> str:
    """A directory to create or reuse: anything but an existing non-directory (checked here,
    so a run fails before training instead of at its first checkpoint)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a directory path, got an empty string")
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    return text


def probability(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {v}")
    return v


def processes_or_auto(text: str):
    return "auto" if text == "auto" else positive_int(text)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The options every task understands (their defaults: COMMON_DEFAULTS, then the task's
    DEFAULTS)."""
    g = p.add_argument_group("model and training (common to all tasks)")
    g.add_argument("--cell", choices=CELL_CHOICES, help="recurrent cell family")
    g.add_argument("--layers", type=positive_int, help="number of stacked recurrent layers")
    g.add_argument("--hidden", type=positive_int, help="hidden units per layer")
    g.add_argument("--bidirectional", action="store_true", default=None,
                   help="run each layer in both directions")
    g.add_argument("--dropout", type=probability, help="dropout rate in [0, 1)")
    g.add_argument("--epochs", type=non_negative_int, help="passes over the training data")
    g.add_argument("--batch-size", type=positive_int, help="examples per batch")
    g.add_argument("--lr", type=positive_float, help="learning rate (Adam)")
    g.add_argument("--seed", type=non_negative_int, help="seed of initialisation, shuffling, "
                   "dropout")
    g.add_argument("--clip-norm", type=positive_float,
                   help="clip gradients to this global norm (default 1.0)")
    g.add_argument("--skip-nonfinite", action=argparse.BooleanOptionalAction, default=None,
                   help="skip an update whose gradient has NaN/inf entries instead of stopping "
                        "(default: on)")
    g.add_argument("--checkpoint-dir", type=directory_path, help="save a checkpoint here every "
                   "epoch (default: OUT/checkpoints)")
    g.add_argument("--resume", action="store_true", default=None,
                   help="continue from the checkpoint in --checkpoint-dir")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="replace the model and checkpoints an earlier run left in --out")
    g.add_argument("--out", help="directory for the plot and the trained model "
                   "(default: runs/TASK)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar: one line per epoch")
    g.add_argument("--data-parallel", type=non_negative_int, nargs="?", const=0, metavar="N",
                   help="split each batch over N devices, parameters replicated (no N or 0: "
                        "all devices; see jaxrnn.parallel)")
    g.add_argument("--num-processes", type=processes_or_auto, metavar="N|auto",
                   help="train as one of N processes (with --process-id, --coordinator; "
                        "auto: detected on SLURM / TPU pods); see jaxrnn.parallel")
    g.add_argument("--process-id", type=non_negative_int, metavar="I",
                   help="this process's index, 0 .. N-1")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address and a port")
    g.add_argument("--seeds", metavar="LIST", help="train one model per seed together, e.g. 1-8 "
                   "or 0,3,7; prints the held-out metric's mean and spread (jaxrnn.train.ensemble)")


def add_model_directory_arguments(p: argparse.ArgumentParser, command: str) -> None:
    """``--model DIR`` (the run's model directory) and, for ``predict``, ``--input`` and
    ``--output``."""
    g = p.add_argument_group("model directory")
    if command == "train":
        g.add_argument("--model", metavar="DIR",
                       help="write the model directory here (default OUT/model; tasks on "
                            "your own data)")
    else:
        g.add_argument("--model", metavar="DIR",
                       help="the model directory a training run wrote (OUT/model)")
    if command == "predict":
        g.add_argument("--input", metavar="FILE", required=True,
                       help="inputs in the format the task trained on")
        g.add_argument("--output", metavar="FILE.csv", required=True,
                       help="write the predictions here as CSV")


def _task_module(name: str):
    if name not in TASKS:
        print(f"jaxrnn: error: unknown task {name!r}; choose from: {', '.join(sorted(TASKS))}",
              file=sys.stderr)
        raise SystemExit(2)
    return _load(TASKS[name])


def _selected_task(argv: list[str]) -> str:
    """``--task``; without it, the task a ``--model DIR`` was trained for (so ``predict``,
    ``evaluate`` and ``generate`` need only the directory), else the default task."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--task", default=None)
    pre.add_argument("--model", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.task is None and known.model is not None:
        from jaxrnn.io import model_dir

        try:
            saved = (model_dir.read_header(known.model).get("preprocessing") or {}).get("task")
        except (OSError, ValueError, TypeError):
            saved = None
        if saved in TASKS:
            return saved
    return known.task or DEFAULT_TASK


def build_parser(task: str | None = None) -> argparse.ArgumentParser:
    """The full parser; ``task`` selects whose options ``train``/``evaluate``/``generate``
    accept (default: the default task)."""
    task = task or DEFAULT_TASK
    task_list = ", ".join(f"{t} (default)" if t == DEFAULT_TASK else t for t in TASKS)
    parser = argparse.ArgumentParser(
        prog="jaxrnn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"tasks: {task_list}\ndemos: {', '.join(DEMOS)}",
        # No prefix matching: "--data FILE" must not be read as "--data-parallel FILE".
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    mod = _task_module(task)
    helps = {
        "train": f"train a model on a task (default task: {DEFAULT_TASK})",
        "evaluate": "evaluate a trained model on a task's held-out data",
        "generate": "generate from a trained model (tasks that support it)",
        "predict": "batch inference from a saved model directory on a file of inputs",
    }
    for command in TASK_COMMANDS:
        if hasattr(mod, command):
            description = f"{helps[command]}. Task {task!r}: {getattr(mod, 'DESCRIPTION', '')}"
        else:  # e.g. generate without --task: the default task does not generate
            able = [t for t, path in TASKS.items() if hasattr(_load(path), command)]
            description = (f"{helps[command]}. Tasks that do: {', '.join(able)}; their "
                           f"options: jaxrnn {command} --task NAME --help")
        p = sub.add_parser(command, help=helps[command], allow_abbrev=False,
                           description=description)
        p.add_argument("--task", default=task, choices=sorted(TASKS),
                       help=f"which task (default {DEFAULT_TASK}); options below are "
                            f"those of {task!r}")
        add_common_arguments(p)
        add_model_directory_arguments(p, command)
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
        defaults = {**COMMON_DEFAULTS, **getattr(mod, "DEFAULTS", {})}
        p.set_defaults(**defaults)
        p.set_defaults(_task_module=mod)
        _label_help(p, command, defaults)

    demo = sub.add_parser("demo", help="run a demonstration", allow_abbrev=False)
    demo_sub = demo.add_subparsers(dest="name", required=True)
    for name, path in DEMOS.items():
        dmod = _load(path)
        p = demo_sub.add_parser(name, help=getattr(dmod, "DESCRIPTION", ""),
                                allow_abbrev=False)
        dmod.add_arguments(p)
        p.set_defaults(_run=dmod.main)
    return parser


def _label_help(p: argparse.ArgumentParser, command: str, defaults: dict) -> None:
    """Show the task's defaults in ``--help``; hide training options from other commands."""
    for action in p._actions:
        if command != "train" and action.dest in TRAINING_OPTIONS:
            action.help = argparse.SUPPRESS
        elif command == "train" and action.dest in SHOWN_DEFAULTS and action.help:
            value = defaults.get(action.dest)
            if action.dest == "epochs" and value is None:
                action.help += " (default: until the time budget)"
            elif value is not None:
                action.help += f" (default: {value})"


def _finish_args(args) -> None:
    """Fill the derived defaults: the output and checkpoint directories."""
    if args.out is None:
        args.out = os.path.join("runs", args.task)
    if args.checkpoint_dir is None:
        args.checkpoint_dir = os.path.join(args.out, "checkpoints")
    if getattr(args, "model", None) is None:
        args.model = os.path.join(args.out, "model")


def _bytes_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def _weights_too_large(args) -> str | None:
    """A refusal when the recurrent stack's float32 weights alone (counted from the cell's own
    ``init`` under ``jax.eval_shape``: nothing allocated; the first layer fed one feature, so
    a lower bound) times 4 (weights, gradients, Adam's two moments) exceed this machine's
    memory: an absurd ``--hidden`` is one line, not an allocator abort."""
    hidden, layers = getattr(args, "hidden", None), getattr(args, "layers", None) or 1
    if not isinstance(hidden, int) or hidden * hidden * layers < 10**8:
        return None  # under ~1.6 GB for any cell: not worth a trace
    import warnings

    import jax

    from jaxrnn.cells import registry

    try:
        cell = registry.make(args.cell, hidden)
    except (ValueError, TypeError):
        return None  # a cell the task builds its own way
    directions = 2 if getattr(args, "bidirectional", False) else 1

    def size(features):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # int64 index casts at absurd sizes
            shapes = jax.eval_shape(lambda k: cell.init(k, features), jax.random.key(0))
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))

    weights = directions * (size(1) + (layers - 1) * size(directions * hidden))
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    if 4 * weights <= memory:
        return None
    return (f"--hidden: {hidden} units would need {_bytes_text(weights)} for the {args.cell} "
            f"weights alone ({layers} layer(s)) and about {_bytes_text(4 * weights)} to train "
            f"(gradients, Adam's moments); this machine has {_bytes_text(memory)} of memory")


def _check_train_args(args) -> str | None:
    """What refuses a ``train`` command before anything is read (None: nothing): ``--epochs
    0``, and an ``--out`` holding an earlier run's model or checkpoints without ``--resume``
    or ``--overwrite``."""
    if args.epochs == 0:
        return ("--epochs: expected at least 1, got 0 (0 epochs train nothing: the model "
                "written would be its random initialisation)")
    too_large = _weights_too_large(args)
    if too_large is not None:
        return too_large
    if args.resume or args.overwrite:
        return None
    ckpt = args.checkpoint_dir
    earlier = [path for path in (args.model, ckpt) if os.path.isdir(path) and os.listdir(path)]
    if earlier:
        return (f"--out: {args.out!r} holds an earlier run ({earlier[0]!r}); pass --resume to "
                f"continue its training or --overwrite to replace it (or choose another --out)")
    return None


@contextlib.contextmanager
def _interrupts():
    """Ctrl-C while a command runs: a KeyboardInterrupt as usual (``fit`` checkpoints the
    batches done and says to continue with ``--resume``), also remembered in
    ``epochs.INTERRUPT``, so that one dropped by a garbage-collection callback still stops
    the run and the exit status is still 130. While an epoch's updates run
    (``epochs.IN_UPDATES``) the first Ctrl-C only sets the flag: the loop raises it after the
    update in flight, so the checkpoint holds every update made; a second one raises at once."""
    from jaxrnn.train import epochs

    epochs.INTERRUPT.clear()
    if threading.current_thread() is not threading.main_thread():
        yield epochs.INTERRUPT
        return

    def on_sigint(signum, frame):
        again = epochs.INTERRUPT.is_set()
        epochs.INTERRUPT.set()
        if again or not epochs.IN_UPDATES.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    hint, epochs.RESUME_HINT = epochs.RESUME_HINT, "--resume (the same command)"
    try:
        yield epochs.INTERRUPT
    finally:
        signal.signal(signal.SIGINT, previous)
        epochs.RESUME_HINT = hint


def _checkpoint_fingerprint(directory: str | None):
    """32 bytes identifying the newest checkpoint file in ``directory`` (zeros when none)."""
    import numpy as np

    from jaxrnn.digest import sha256_file
    from jaxrnn.io import latest_checkpoint

    path = latest_checkpoint(directory) if directory else None
    if path is None:
        return np.zeros(32, np.uint8)
    return np.frombuffer(bytes.fromhex(sha256_file(path)), np.uint8).copy()


@contextlib.contextmanager
def _processes(args):
    """``--num-processes / --process-id / --coordinator`` (or the ``JAXRNN_*`` variables of
    ``python -m jaxrnn.launch``; ``--num-processes auto``: JAX's detection on SLURM / TPU pods)
    and ``--data-parallel`` -> ``args.data_parallel``, the mesh (or None) the task compiles its
    steps over.

    Every process runs the whole task on the same data; only process 0 prints, plots and writes:
    the others print nothing, have no progress bar and write ``--out``, ``--model`` and
    ``--checkpoint-dir`` into a private scratch directory removed at the end (with ``--resume``
    it starts as a copy of the shared checkpoint directory, which every process must see:
    checked before training).
    """
    import shutil
    import tempfile

    from jaxrnn import parallel

    n = getattr(args, "num_processes", None)
    given = (None if n == "auto" else n, getattr(args, "process_id", None),
             getattr(args, "coordinator", None))
    if any(v is not None for v in given) and not all(v is not None for v in given):
        raise ValueError(
            "--num-processes, --process-id, --coordinator: give all three (or launch with "
            "python -m jaxrnn.launch -n N -- jaxrnn ...), got "
            f"--num-processes {n} --process-id {given[1]} --coordinator {given[2]}")
    if given[2] is not None:
        parallel.runtime.check_address(given[2], "--coordinator")
    if all(v is None for v in given):
        given = (None, None, None)
    if not parallel.initialize(num_processes=given[0], process_id=given[1],
                               coordinator=given[2], auto_detect=n == "auto"):
        dp = getattr(args, "data_parallel", None)
        args.data_parallel = parallel.resolve_mesh(None if dp is None else (dp or True))
        yield
        return
    args.data_parallel = parallel.make_mesh()
    rank = parallel.process_index()
    if rank == 0:
        print(f"distributed: {parallel.process_count()} processes, "
              f"{args.data_parallel.devices.size} devices (global batch "
              f"{getattr(args, 'batch_size', '?')} split over them)", flush=True)
    resume = getattr(args, "resume", False)
    if resume and not parallel.same_on_every_process(
            _checkpoint_fingerprint(getattr(args, "checkpoint_dir", None))):
        raise ValueError(
            f"--resume: process {rank} sees a different checkpoint in {args.checkpoint_dir!r} "
            f"than process 0 (a resumed multi-process run needs the same checkpoint directory "
            f"on every host, e.g. a shared file system)")
    scratch = stdout = None
    try:
        if rank != 0:
            scratch = tempfile.mkdtemp(prefix=f"jaxrnn-rank{rank}-")
            shared_checkpoints = getattr(args, "checkpoint_dir", None)
            args.out = os.path.join(scratch, "out")
            args.model = os.path.join(scratch, "model")
            args.checkpoint_dir = os.path.join(scratch, "checkpoints")
            if shared_checkpoints and resume and os.path.isdir(shared_checkpoints):
                shutil.copytree(shared_checkpoints, args.checkpoint_dir)
            args.progress = False
            stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115 -- closed below
        yield
    except BaseException as e:
        parallel.mark_failed(130 if isinstance(e, KeyboardInterrupt) else 1)
        raise
    finally:
        if stdout is not None:
            sys.stdout.close()
            sys.stdout = stdout
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxrnn`` console script; returns the exit status.

    Called with ``argv=None`` (the console script, ``python -m jaxrnn``), an interrupted run
    leaves with ``os._exit(130)`` once its output is flushed: the checkpoint is written by
    then, and interpreter teardown with XLA's threads cut off mid-work crashed (SIGSEGV) in
    about one interrupted run in three."""
    try:
        with _interrupts() as interrupted:
            status = _run(list(sys.argv[1:] if argv is None else argv))
            if interrupted.is_set() and status == 0:
                raise KeyboardInterrupt  # dropped by a gc callback; the run ended regardless
    except KeyboardInterrupt:
        # fit has saved a checkpoint of the batches done; --resume continues from it.
        print(" ".join(filter(None, ["jaxrnn", _COMMAND[0]])) + ": interrupted",
              file=sys.stderr)
        status = 130
    if status == 130 and argv is None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)
    return status


_COMMAND = [None]  # the command being run, for the interrupt message


def _run(argv: list[str]) -> int:
    from jaxrnn.data.deps import MissingDependencyError

    _COMMAND[0] = argv[0] if argv and argv[0] in (*TASK_COMMANDS, "demo") else None
    task = _selected_task(argv[1:]) if argv and argv[0] in TASK_COMMANDS else None
    args = build_parser(task).parse_args(argv)
    if args.command == "demo":
        args._run(args)
        return 0
    _finish_args(args)
    if args.command == "train":
        refused = _check_train_args(args)
        if refused is not None:
            print(f"jaxrnn train: error: {refused}", file=sys.stderr)
            return 2
    mod = args._task_module
    fn = getattr(mod, args.command, None)
    if fn is None:
        supported = sorted(t for t, path in TASKS.items()
                           if hasattr(_load(path), args.command))
        print(f"jaxrnn {args.command}: error: the task {args.task!r} has no {args.command!r}; "
              f"tasks that do: {', '.join(supported) or 'none'}", file=sys.stderr)
        return 2
    if getattr(args, "seeds", None) is not None and args.command == "train":
        from jaxrnn.tasks.ensemble import run_cli as fn
    try:
        with _processes(args):
            fn(args)
    except MissingDependencyError as e:
        print(f"jaxrnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as e:
        if os.environ.get("JAXRNN_DEBUG"):
            raise
        print(f"jaxrnn {args.command}: error: {e} (set JAXRNN_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
