"""``jaxrnn train --task NAME --seeds 1-8``: one member per seed trained together
(:func:`jaxrnn.train.ensemble.fit_ensemble`), from the task's own data preparation.

The ensemble path knows the classification tasks over a fixed data set (``TASK_SPECS``); other
tasks train their members one at a time with ``--seed``.
"""

from __future__ import annotations

import re

from jaxrnn.train.ensemble import ensemble_classifier, fit_ensemble


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"1-8"`` -> (1, ..., 8); ``"0,3,7"``; ``"1-4,10,12-13"``; each seed an int >= 0, no
    repeats."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"--seeds: expected a list or range such as '1-8' or '0,3,7', "
                         f"got {text!r}")
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f"--seeds: range {part!r} ends before it starts")
            seeds.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", part):
            seeds.append(int(part))
        else:
            raise ValueError(f"--seeds: expected integers >= 0 or ranges A-B separated by "
                             f"commas, got {part!r} in {text!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: repeated seed in {text!r}")
    return tuple(seeds)


# The recurrence the CLI's ensembles take; benchmarks/scaling.py measures "kernel" against "plain"
# for K = 8 (switch here if the plain path is faster on the machines that matter).
CLI_PATH = "kernel"


def _digits_spec(args):
    from jaxrnn.tasks.digits import load_splits

    data = load_splits(getattr(args, "limit", None))
    model = ensemble_classifier(8, 10, cell=args.cell, hidden=args.hidden, path=CLI_PATH)
    return {"model": model, "loss": "softmax_cross_entropy", "metric": "accuracy",
            "train": data["train"], "val": data["test"], "held_out": "test",
            "clip_norm": getattr(args, "clip_norm", 1.0)}


def _classifier_spec(args, splits, n_classes, *, held_out="test"):
    """The spec of a classification task from its prepared splits (``{"train", "test", ...}``
    of ``{"inputs", "targets"[, "lengths"]}``): the members train on the training split (the
    task's validation split, used alone for early stopping, is left out) and are measured on
    the held-out split."""
    n_features = splits["train"]["inputs"].shape[-1]
    model = ensemble_classifier(n_features, n_classes, cell=args.cell, hidden=args.hidden,
                                path=CLI_PATH)
    keep = ("inputs", "targets", "lengths")
    pick = lambda split: {k: v for k, v in split.items() if k in keep}
    return {"model": model, "loss": "softmax_cross_entropy", "metric": "accuracy",
            "train": pick(splits["train"]), "val": pick(splits[held_out]),
            "held_out": held_out, "clip_norm": getattr(args, "clip_norm", 1.0)}


def _fashion_spec(args):
    # the task's own reading and preparation (jaxrnn.tasks.fashion), not a copy of it
    from jaxrnn.tasks.fashion import load_images, prepare

    data = load_images(getattr(args, "dataset", "auto"))
    splits = prepare(data, val_size=getattr(args, "val_size", 5000),
                     limit=getattr(args, "limit", None))
    return _classifier_spec(args, splits, len(data.classes))


def _speech_spec(args):
    from jaxrnn.datasets.japanese_vowels import load_japanese_vowels
    from jaxrnn.tasks.speech import prepare

    data = load_japanese_vowels()
    splits = prepare(data, val_fraction=getattr(args, "val_fraction", 0.1), seed=0)
    return _classifier_spec(args, splits, len(data.classes))


def _classify_spec(args):
    """``--task classify --data FILE`` (``--test`` / ``--validation`` files, ``--index-column``):
    read, labels encoded, split and standardised by :func:`jaxrnn.tasks.classify.prepare`,
    the function ``jaxrnn train --task classify`` uses; the members are measured on its test
    split (``--test FILE`` when given)."""
    from jaxrnn.tasks import classify as C

    prepared = C.prepare(args)
    return _classifier_spec(args, prepared.splits, prepared.encoder.num_classes)


# Tasks whose model and data the ensemble path knows how to build (a classifier over a fixed
# data set); other tasks train their members one at a time with --seed.
TASK_SPECS = {"digits": _digits_spec, "fashion": _fashion_spec, "speech": _speech_spec,
              "classify": _classify_spec}


def _refused_flag(args) -> str | None:
    """The message refusing a common training flag the ensemble path does not honour (None: it
    honours every one given): it keeps no checkpoints (``--resume``) and spreads members, not
    batches, over devices (``--data-parallel``, several processes)."""
    where = f"task {args.task} with --seeds (the ensemble path)"
    if getattr(args, "resume", False):
        return (f"--resume: {where} keeps no checkpoints (its members train together in one "
                f"run); run it again without --resume")
    if getattr(args, "num_processes", None) is not None:
        return (f"--num-processes: {where} trains in one process; train one model per process "
                f"with --seed instead")
    if getattr(args, "data_parallel", None) is not None:
        return (f"--data-parallel: {where} does not split batches over devices (every member "
                f"sees the whole batch); run it without --data-parallel")
    return None


def run_cli(args) -> dict:
    """``jaxrnn train --task NAME --seeds 1-8``: train one member per seed together and print
    the held-out metric's mean and spread."""
    seeds = parse_seeds(args.seeds)
    if args.task not in TASK_SPECS:
        raise ValueError(f"--seeds: the ensemble path supports the tasks "
                         f"{sorted(TASK_SPECS)}, got {args.task!r} (train other tasks once "
                         f"per --seed)")
    refusal = _refused_flag(args)
    if refusal is not None:
        raise ValueError(refusal)
    if getattr(args, "layers", 1) != 1 or getattr(args, "bidirectional", False):
        raise ValueError("--seeds: the ensemble path trains one unidirectional layer "
                         "(--layers 1, no --bidirectional)")
    spec = TASK_SPECS[args.task](args)
    model = spec["model"]
    n_train = len(spec["train"]["targets"])
    print(f"{args.task}: {len(seeds)} {args.cell} models (hidden {args.hidden}, seeds "
          f"{args.seeds}) trained together, {n_train} training examples")
    result = fit_ensemble(model.init, model.apply, spec["loss"], spec["train"], seeds=seeds,
                          learning_rates=args.lr, clip_norm=spec["clip_norm"],
                          epochs=args.epochs, batch_size=min(args.batch_size, n_train),
                          val_data=spec["val"], metrics=[spec["metric"]],
                          data_seed=seeds[0],
                          skip_nonfinite=bool(getattr(args, "skip_nonfinite", False)),
                          verbose=bool(getattr(args, "progress", False)))
    name = spec["metric"]
    values = result.val[name]
    s = result.summary[name]
    per = "  ".join(f"{seed}:{v:.4f}" for seed, v in zip(seeds, values, strict=True))
    print(f"{spec['held_out']} {name} per seed: {per}")
    print(f"{spec['held_out']} {name}: mean {s['mean']:.4f}, std {s['std']:.4f}, "
          f"min {s['min']:.4f}, max {s['max']:.4f} over {len(seeds)} seeds "
          f"({result.seconds:.1f} s of training)")
    return {"seeds": seeds, name: values, "loss": result.val["loss"], "summary": s,
            "seconds": result.seconds}


__all__ = ["parse_seeds", "run_cli", "TASK_SPECS", "CLI_PATH"]
