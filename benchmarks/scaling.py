"""Throughput of the parallel paths: an ensemble of K small LSTMs in one program, data
parallelism over 1, 2, 4, 8 simulated CPU devices, and over 2 processes.

    python -m benchmarks.scaling            # the full run (minutes)
    python -m benchmarks.scaling --quick    # a smoke run: few repetitions, numbers not to quote

Prints a markdown table and writes ``bench-results/<UTC time>-scaling[-quick].json``.

* **Ensemble**: K = 8 LSTM classifiers (hidden 32, batch 32, 20 steps of 8 features) updated by one
  vmapped step (:mod:`jaxrnn.train.ensemble`), with the fused CPU kernel (under vmap: one kernel
  call for all K members, split over the threads by member; the report says which path the
  kernels took, "batched" or "sequential") and with the plain ``lax.scan`` (batched matrix
  products), against the same model's compiled step called K times one after another. Target:
  together >= 3x faster (issue 18).
* **Devices**: one data-parallel train step (:mod:`jaxrnn.parallel`, global batch 64) in a fresh
  process with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``. Simulated devices share the
  machine's cores: on a 2-core machine these numbers measure the overhead of sharding (splitting
  the batch, the all-reduce), not a speed-up; real devices (or more cores) are needed for that.
* **Processes**: the same step over 2 local processes (:mod:`jaxrnn.launch`, gloo collectives
  over TCP); on one machine this too measures overhead, not speed-up.
* **GPU**: when JAX sees a GPU, the ensemble rows also run there (one-GPU throughput).

Medians of interleaved repetitions (:func:`benchmarks.measure.interleaved`), compilation
excluded (warm-up calls).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench-results")  # raw results stay out of git

K, HIDDEN, BATCH, TIME, FEATURES, CLASSES = 8, 32, 32, 20, 8, 10
DP_BATCH, DP_HIDDEN = 64, 64
DEVICE_COUNTS = (1, 2, 4, 8)
NOTE = ("simulated CPU devices and local processes share this machine's cores: on 2 cores the "
        "device and process rows measure overhead, not speed-up")


def _data(batch, rng_seed=0):
    import numpy as np

    rng = np.random.default_rng(rng_seed)
    return {"inputs": rng.normal(size=(batch, TIME, FEATURES)).astype(np.float32),
            "targets": rng.integers(0, CLASSES, batch).astype(np.int32)}


class _Runner:
    """``call()`` runs one unit of work to completion (for measure.interleaved)."""

    def __init__(self, fn):
        self.fn = fn

    def call(self):
        self.fn()


def ensemble_runners():
    """``{name: _Runner}``: one call = one update of all K models."""
    import jax

    from jaxrnn.train import ensemble as E
    from jaxrnn.train import init_train_state, make_optimizer, make_train_step

    batch = jax.device_put(_data(BATCH))
    runners = {}
    for path in ("kernel", "plain"):
        model = E.ensemble_classifier(FEATURES, CLASSES, hidden=HIDDEN, path=path)
        states, opt = E.init_ensemble(model.init, range(K), learning_rates=1e-3)
        step = E.make_ensemble_step(model.apply, "softmax_cross_entropy", opt)
        box = {"s": states}

        def together(step=step, box=box):
            box["s"], logs = step(box["s"], batch)
            jax.block_until_ready(logs["loss"])

        runners[f"together ({path})"] = _Runner(together)

        one_opt = make_optimizer(1e-3, clip_norm=1.0)
        one_step = make_train_step(model.apply, "softmax_cross_entropy", one_opt)
        members = {"s": [init_train_state(model.init(jax.random.key(k)), one_opt, k)
                         for k in range(K)]}

        def after_another(step=one_step, members=members):
            out = []
            for s in members["s"]:
                s, logs = step(s, batch)
                out.append(s)
            members["s"] = out
            jax.block_until_ready(logs["loss"])

        runners[f"one after another ({path})"] = _Runner(after_another)
    return runners


def kernel_path_under_vmap() -> dict:
    """Which path the LSTM kernels take in the together step: the kernels' own answer
    (:func:`jaxrnn.train.ensemble.kernel_vmap_path`) and what the lowered program of the vmapped
    training gradient shows (kernel calls, and whether they sit in a loop)."""
    import jax
    import jax.numpy as jnp

    from jaxrnn.train import ensemble as E

    model = E.ensemble_classifier(FEATURES, CLASSES, hidden=HIDDEN, path="kernel")
    params = E.stack([model.init(jax.random.key(k)) for k in range(K)])
    batch = _data(BATCH)

    def grad(p):
        return jax.grad(lambda p: jnp.sum(model.apply(p, batch["inputs"])))(p)

    text = jax.jit(jax.vmap(grad)).lower(params).as_text()
    calls = {t: text.count(f"custom_call @jaxrnn_lstm_{t}(") for t in ("forward", "backward")}
    looped = "stablehlo.while" in text
    seen = ("batched" if calls == {"forward": 1, "backward": 1} and not looped
            else "sequential" if looped else "other")
    return {"declared": E.kernel_vmap_path("lstm"), "lowered": seen, "calls": calls,
            "loop": looped}


def run_ensemble(reps: int) -> dict:
    import jax

    from benchmarks.measure import interleaved, summarise

    path = kernel_path_under_vmap()
    print(f"kernels under vmap: {path['declared']} (lowered program: {path['lowered']}, "
          f"{path['calls']['forward']} forward / {path['calls']['backward']} backward LSTM "
          f"kernel call(s) for {K} members{', inside a loop' if path['loop'] else ''})",
          flush=True)
    runners = ensemble_runners()
    times = interleaved(runners, reps, warmup=2)
    rows = {name: summarise(ts, K * BATCH * TIME) for name, ts in times.items()}
    best_seq = min(rows[f"one after another ({p})"]["median_s"] for p in ("kernel", "plain"))
    for p in ("kernel", "plain"):
        rows[f"together ({p})"]["speedup_vs_best_sequential"] = \
            best_seq / rows[f"together ({p})"]["median_s"]
    return {"backend": jax.default_backend(), "K": K, "hidden": HIDDEN, "batch": BATCH,
            "time": TIME, "kernel_vmap_path": path, "rows": rows}


# --------------------------------------------------------------------------- data parallel

def _dp_step(mesh_or_n):
    """A data-parallel LSTM train step and its state over the global batch of DP_BATCH."""
    import jax

    from jaxrnn.train import init_train_state, make_optimizer, make_train_step
    from jaxrnn.train.models import sequence_classifier

    model = sequence_classifier(FEATURES, CLASSES, cell="lstm", hidden=DP_HIDDEN)
    opt = make_optimizer(1e-3, clip_norm=1.0)
    state = init_train_state(model.init(jax.random.key(0)), opt, 0)
    step = make_train_step(model.apply, "softmax_cross_entropy", opt, data_parallel=mesh_or_n)
    return state, step


def _time_steps(state, step, batch, reps: int) -> list[float]:
    import jax

    for _ in range(2):
        state, logs = step(state, batch)
    jax.block_until_ready(logs["loss"])
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        state, logs = step(state, batch)
        jax.block_until_ready(logs["loss"])
        out.append(time.perf_counter() - t0)
    return out


def worker_devices(reps: int) -> dict:
    """In a process started with N simulated devices: the data-parallel step over all of them."""
    import jax

    from benchmarks.measure import summarise

    n = jax.device_count()
    state, step = _dp_step(n if n > 1 else False)
    return {"devices": n, **summarise(_time_steps(state, step, _data(DP_BATCH), reps),
                                      DP_BATCH * TIME)}


def worker_processes(reps: int) -> dict:
    """One of several processes (started by jaxrnn.launch): the step over the global mesh."""
    from jaxrnn import parallel

    parallel.initialize()
    import jax

    from benchmarks.measure import summarise

    mesh = parallel.make_mesh()
    state, step = _dp_step(mesh)
    return {"processes": jax.process_count(), "devices": jax.device_count(),
            **summarise(_time_steps(state, step, _data(DP_BATCH), reps), DP_BATCH * TIME)}


def _last_json(text: str, prefix: str = "") -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith(prefix + "{"):
            return json.loads(line[len(prefix):])
    raise RuntimeError(f"no result in the worker's output:\n{text[-3000:]}")


def run_devices(reps: int, timeout: float) -> list[dict]:
    rows = []
    for n in DEVICE_COUNTS:
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}",
               "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
        proc = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--worker", "devices",
                               "--reps", str(reps)], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode:
            raise RuntimeError(f"{n} devices: worker failed:\n{proc.stderr[-3000:]}")
        rows.append(_last_json(proc.stdout))
    return rows


def run_processes(reps: int, timeout: float, n: int = 2) -> dict:
    from jaxrnn.parallel.launch import launch

    out = io.StringIO()
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": ROOT}
    result = launch([sys.executable, "-m", "benchmarks.scaling", "--worker", "processes",
                     "--reps", str(reps)], n, timeout=timeout, env=env, output=out)
    if result.returncode:
        raise RuntimeError(f"{n} processes: {result.message}\n{out.getvalue()[-3000:]}")
    return _last_json(out.getvalue(), "[rank 0] ")


# --------------------------------------------------------------------------- report

def table(report: dict) -> str:
    lines = []
    ens = report.get("ensemble")
    if ens:
        lines += [f"### K = {ens['K']} LSTMs (hidden {ens['hidden']}, batch {ens['batch']}, "
                  f"T {ens['time']}) on {ens['backend']}", ""]
        kp = ens.get("kernel_vmap_path")
        if kp:
            lines += [f"_Kernels under vmap: {kp['declared']} ({kp['calls']['forward']} forward "
                      f"and {kp['calls']['backward']} backward kernel call(s) for all {ens['K']} "
                      f"members{', in a loop' if kp['loop'] else ', no loop'})._", ""]
        lines += ["| how | ms per update of all K | spread | speed-up vs best one-after-another |",
                  "|---|---:|---:|---:|"]
        for name, r in ens["rows"].items():
            sp = r.get("speedup_vs_best_sequential")
            sp = "" if sp is None else f"{sp:.2f}x"
            lines.append(f"| {name} | {1e3 * r['median_s']:.2f} | {r['spread']:.2f} | {sp} |")
        lines.append("")
    rows = list(report.get("devices") or [])
    if report.get("processes"):
        rows.append(report["processes"])
    if rows:
        lines += [f"### Data parallel LSTM step (hidden {DP_HIDDEN}, global batch {DP_BATCH}, "
                  f"T {TIME})", "", f"_{NOTE}._", "",
                  "| run | ms per step | examples/s | relative to 1 device |",
                  "|---|---:|---:|---:|"]
        base = next((r["median_s"] for r in rows if r["devices"] == 1 and "processes" not in r),
                    None)
        for r in rows:
            what = (f"{r['processes']} processes, {r['devices']} devices" if "processes" in r
                    else f"{r['devices']} simulated device(s)")
            rel = "" if base is None else f"{base / r['median_s']:.2f}x"
            lines.append(f"| {what} | {1e3 * r['median_s']:.2f} | "
                         f"{DP_BATCH / r['median_s']:.0f} | {rel} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few repetitions (a smoke run)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per measurement")
    p.add_argument("--worker", choices=("devices", "processes"), help=argparse.SUPPRESS)
    p.add_argument("--skip", default="", help="comma-separated sections to skip: "
                                              "ensemble, devices, processes")
    args = p.parse_args(argv)
    reps = args.reps or (3 if args.quick else 30)
    if args.worker == "devices":
        print(json.dumps(worker_devices(reps)))
        return 0
    if args.worker == "processes":
        import jax

        res = worker_processes(reps)
        if jax.process_index() == 0:
            print(json.dumps(res), flush=True)
        return 0
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    timeout = 300 if args.quick else 1200
    report = {"note": NOTE, "quick": args.quick, "reps": reps,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "cpu_count": os.cpu_count()}
    report["ensemble"] = run_ensemble(reps) if "ensemble" not in skip else None
    report["devices"] = run_devices(reps, timeout) if "devices" not in skip else []
    report["processes"] = run_processes(reps, timeout) if "processes" not in skip else None
    print(table(report))
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(RESULTS, f"{stamp}-scaling{'-quick' if args.quick else ''}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
