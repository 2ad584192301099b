"""One process of a multi-process training run (started by tests/test_multiprocess.py through
``jaxrnn.launch``), and the same training in a single process for the reference.

    python tests/_multiprocess_worker.py OUT_DIR [--steps N] [--fail-rank R] [--fail-how raise|exit]
        [--checkpoint-dir DIR] [--save-at S] [--resume]

Trains a small LSTM classifier on fixed synthetic data, every process building the same global
batches (seeded NumPy) and feeding only its own rows with ``jaxrnn.parallel.shard_batch``.
Each process writes ``OUT_DIR/rank{i}.npz``: the loss of every step and the final parameters.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

GLOBAL_BATCH = 8
TIME, FEATURES, CLASSES, HIDDEN = 6, 3, 4, 8


def global_batches(steps: int) -> list[dict]:
    """The same global batches in every process (and in the single-process reference)."""
    rng = np.random.default_rng(1234)
    return [{"inputs": rng.normal(size=(GLOBAL_BATCH, TIME, FEATURES)).astype(np.float32),
             "targets": rng.integers(0, CLASSES, size=GLOBAL_BATCH).astype(np.int32)}
            for _ in range(steps)]


def model():
    from jaxrnn.train.models import sequence_classifier

    return sequence_classifier(FEATURES, CLASSES, cell="lstm", hidden=HIDDEN)


def setup(mesh=None):
    """``(initial TrainState, step)`` for a mesh (data parallel) or None (one device)."""
    import jax

    from jaxrnn.train import init_train_state, make_optimizer, make_train_step

    m = model()
    opt = make_optimizer(1e-2, clip_norm=1.0)
    state = init_train_state(m.init(jax.random.key(0)), opt, 0)
    step = make_train_step(m.apply, "softmax_cross_entropy", opt,
                           data_parallel=False if mesh is None else mesh)
    return state, step


def flat_params(params) -> dict[str, np.ndarray]:
    import jax

    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def train_single(steps: int):
    """The reference: the same global batches, one process, one device."""
    state, step = setup(None)
    losses = []
    for batch in global_batches(steps):
        state, logs = step(state, batch)
        losses.append(float(logs["loss"]))
    return np.asarray(losses), flat_params(state.params)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--fail-rank", type=int, default=None)
    p.add_argument("--fail-how", choices=("raise", "exit"), default="raise")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--save-at", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)

    from jaxrnn import parallel

    parallel.initialize()  # from the JAXRNN_* variables set by jaxrnn.launch
    import jax

    rank = jax.process_index()
    mesh = parallel.make_mesh()
    state, step = setup(mesh)
    first = 0
    if args.resume:
        from jaxrnn.io.sharded_store import restore_state

        state = restore_state(args.checkpoint_dir, state, mesh=mesh)
        first = int(state.step)
    losses = []
    for s, batch in enumerate(global_batches(args.steps)):
        if s < first:
            continue
        if args.fail_rank == rank and s == 1:
            if args.fail_how == "exit":
                os._exit(3)
            raise RuntimeError(f"deliberate failure in rank {rank} at step {s}")
        part = parallel.local_shard(batch, mesh)  # only this process's rows ...
        state, logs = step(state, parallel.shard_batch(part, mesh))  # ... assembled globally
        losses.append(float(logs["loss"]))
        if args.save_at is not None and int(state.step) == args.save_at:
            from jaxrnn.io.sharded_store import save_state

            save_state(args.checkpoint_dir, state)
    # Each process passing its part, or every process passing the whole global batch: the same
    # global array.
    whole = global_batches(1)[0]
    a = parallel.shard_batch(parallel.local_shard(whole, mesh), mesh)
    b = parallel.shard_batch(whole, mesh, batches="global")
    total = jax.jit(lambda t: sum(x.astype(np.float32).sum() for x in jax.tree_util.tree_leaves(t)))
    same_feed = (a["inputs"].shape == b["inputs"].shape == (GLOBAL_BATCH, TIME, FEATURES)
                 and float(total(a)) == float(total(b)))
    np.savez(os.path.join(args.out, f"rank{rank}.npz"), losses=np.asarray(losses),
             same_feed=same_feed,
             process_count=jax.process_count(), device_count=jax.device_count(),
             local_rows=np.asarray([parallel.local_rows(GLOBAL_BATCH, mesh).start,
                                    parallel.local_rows(GLOBAL_BATCH, mesh).stop]),
             **{"param" + k: v for k, v in flat_params(state.params).items()})
    print(f"rank {rank} done: {len(losses)} steps, last loss {losses[-1] if losses else None}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
