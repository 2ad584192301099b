"""The GPU comparison: jaxrnn vs Flax vs PyTorch cuDNN (``nn.LSTM``/``nn.GRU``/``nn.RNN``) on
the same card. ``python -m benchmarks.gpu`` (``benchmarks/gpu_session.sh`` runs it within a
machine's time budget).

Configs A, B, C (``benchmarks/configs.py``) for every registered cell with a peer, and an
LSTM/GRU sequence-length sweep (hidden 256, batch 8, input 64), forward and training (the same
steps as the CPU harness: forward + dense readout + MSE over all steps + backward + Adam). The
libraries of one (config, mode, peer family) are timed interleaved; PyTorch runs in this process
(on a GPU there is no thread pool for it to fight over) and synchronises the device after each
step, as JAX's ``block_until_ready`` does. Prints a Markdown table and writes a JSON record,
rewritten after every group so that a run cut short by a time limit keeps what it measured.

Without a GPU only ``--smoke`` runs (tiny sizes on the CPU, PyTorch cuDNN rows skipped with a
note): a self-test of this script, not a measurement.
"""

from __future__ import annotations

import os

# JAX would otherwise reserve 75% of the card at start-up and leave PyTorch short.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.configs import CONFIGS, Config, sweep_config  # noqa: E402

# raw results stay out of git (.gitignore); the report keeps a summary per CPU
RESULTS = Path(__file__).resolve().parent.parent / "bench-results"
SWEEP_T = (128, 512, 2048, 8192)
SWEEP_CELLS = ("lstm", "gru")
TORCH_FAMILIES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
# --smoke: sizes small enough for a CPU self-test in seconds
SMOKE_CONFIG = Config("smoke", batch=2, T=8, features=4, hidden=8, out=3)
SMOKE_SWEEP_T = (4, 16)
SMOKE_CELLS = ("lstm", "gru")
# issue 16's GPU targets
GPU_MIN_VS_FLAX = 2.0
LSTM_MAX_BEHIND_CUDNN = 1.5  # jaxrnn LSTM within 1.5x of PyTorch cuDNN


def device_info() -> dict:
    """What the figures were measured on: JAX's backend and device, and PyTorch's CUDA."""
    import jax

    d = jax.devices()[0]
    info = {"jax_backend": jax.default_backend(), "jax_device": getattr(d, "device_kind", str(d)),
            "jax_device_count": jax.device_count(), "torch_cuda": None, "torch_device": None}
    try:
        import torch
    except ImportError:
        info["torch_cuda"] = "torch not installed"
        return info
    if torch.cuda.is_available():
        info["torch_cuda"] = torch.version.cuda
        info["torch_device"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
    else:
        info["torch_cuda"] = "unavailable (torch.cuda.is_available() is False)"
    return info


def torch_cuda_runner(family: str, cfg: Config, mode: str):
    """PyTorch's cuDNN recurrent module + ``nn.Linear`` + Adam on the GPU, one step per call,
    the device synchronised before the call returns."""
    from benchmarks import competitors as C

    try:
        import torch
    except ImportError as e:
        raise C.PeerMissing("torch not installed") from e
    if not torch.cuda.is_available():
        raise C.PeerMissing("no CUDA device for PyTorch (torch.cuda.is_available() is False): "
                            "PyTorch cuDNN rows skipped")
    if family not in TORCH_FAMILIES:
        raise C.PeerMissing(f"torch has no {family} module")
    dev = torch.device("cuda")
    torch.manual_seed(1)
    rnn = getattr(torch.nn, TORCH_FAMILIES[family])(cfg.features, cfg.hidden,
                                                    batch_first=True).to(dev)
    lin = torch.nn.Linear(cfg.hidden, cfg.out).to(dev)
    xn, yn = C.data(cfg)
    x, y = torch.from_numpy(xn).to(dev), torch.from_numpy(yn).to(dev)
    if mode == "forward":

        def call():
            with torch.inference_mode():
                rnn(x)
            torch.cuda.synchronize()
    else:
        opt = torch.optim.Adam(list(rnn.parameters()) + list(lin.parameters()),
                               lr=C.LEARNING_RATE)

        def call():
            opt.zero_grad(set_to_none=True)
            hs, _ = rnn(x)
            torch.mean((lin(hs) - y) ** 2).backward()
            opt.step()
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    call()  # first call: cuDNN plans and workspace
    first = time.perf_counter() - t0
    return C.Runner("torch-cudnn", call, None, None,
                    f"cuDNN {torch.backends.cudnn.version()}, first call {first:.2f} s")


def _entries(cells, skip):
    from benchmarks.registry import all_cells

    entries, _ = all_cells()
    known = [e.name for e in entries]
    unknown = set(cells or []) - set(known)
    if unknown:
        raise ValueError(f"--cells: unknown {sorted(unknown)}; available {known}")
    return [e for e in entries
            if (not cells or e.name in cells) and e.name not in (skip or []) and e.peer]


def measure_group(cfg, mode, family, entries, peers, reps, log) -> tuple[list, list]:
    """jaxrnn's cells of one peer family and that family's peers, timed interleaved."""
    from benchmarks import competitors as C
    from benchmarks.measure import interleaved, summarise

    runners, meta, notes = {}, {}, []
    for e in entries:
        runners[f"jaxrnn:{e.name}"] = C.jaxrnn_runner(e.make, cfg, mode, run_fn=e.run)
        meta[f"jaxrnn:{e.name}"] = {"lib": "jaxrnn", "cell": e.name, "note": e.note}
    builders = {"flax": C.flax_runner, "torch-cudnn": torch_cuda_runner}
    for p in peers:
        try:
            runners[f"{p}:{family}"] = builders[p](family, cfg, mode)
        except C.PeerMissing as err:
            notes.append(f"{p}: skipped ({err})")
            continue
        meta[f"{p}:{family}"] = {"lib": p, "cell": family, "note": runners[f"{p}:{family}"].note}
    reps = reps if cfg.T <= 2048 else max(3, reps // 4)  # long sequences: fewer, long calls
    log(f"  {cfg.name} {mode:7s} [{family}] timing {', '.join(runners)} ({reps} reps)")
    times = interleaved(runners, reps, warmup=2)
    recs = [{"config": cfg._asdict(), "mode": mode, "peer_family": family, **meta[k],
             **summarise(times[k], cfg.tokens), "compile_s": r.compile_s,
             "mem_bytes": r.mem_bytes} for k, r in runners.items()]
    return recs, notes


def plan(args) -> list[tuple[Config, str, list]]:
    """(config, mode, cell entries) in the order they are measured: configs, then the sweep."""
    if args.smoke:
        cells = args.cells or (None if args.skip_cells else list(SMOKE_CELLS))
        configs = [SMOKE_CONFIG]
        sweep = [] if args.no_sweep else [
            Config(f"T{T}", batch=2, T=T, features=4, hidden=8, out=3) for T in SMOKE_SWEEP_T]
    else:
        cells = args.cells
        configs = [CONFIGS[c] for c in args.configs]
        sweep = [] if args.no_sweep else [sweep_config(T) for T in args.sweep]
    entries = _entries(cells, args.skip_cells)
    if not entries:
        raise ValueError("--cells/--skip-cells: no cell with a peer left to measure")
    jobs = [(cfg, mode, entries) for cfg in configs for mode in args.modes]
    sweep_entries = [e for e in entries if e.name in SWEEP_CELLS]
    jobs += [(cfg, mode, sweep_entries) for cfg in sweep for mode in args.modes if sweep_entries]
    return jobs


def ratios(run) -> dict:
    """``{(config, mode, cell): {"jaxrnn": tok/s, "flax": ratio, "torch-cudnn": ratio}}``."""
    out = {}
    for g in run["groups"]:
        peers = {r["lib"]: r for r in g if r["lib"] != "jaxrnn"}
        for r in g:
            if r["lib"] != "jaxrnn":
                continue
            row = {"jaxrnn": r["tokens_per_s"]}
            for lib, p in peers.items():
                row[lib] = r["tokens_per_s"] / p["tokens_per_s"]
                row[lib + "_tps"] = p["tokens_per_s"]
            out[(r["config"]["name"], r["mode"], r["cell"])] = row
    return out


def targets(run) -> list[tuple[str, str, str]]:
    """Issue 16's GPU targets: LSTM within 1.5x of PyTorch cuDNN; every cell >= 2x Flax."""
    out = []
    for (cfg, mode, cell), row in ratios(run).items():
        if cfg not in CONFIGS:
            continue
        if "flax" in row:
            out.append((f"GPU {cell} {cfg} {mode} >= {GPU_MIN_VS_FLAX:.0f}x Flax",
                        f"{row['flax']:.2f}x", "yes" if row["flax"] >= GPU_MIN_VS_FLAX else "no"))
        if cell == "lstm" and "torch-cudnn" in row:
            lim = 1 / LSTM_MAX_BEHIND_CUDNN
            out.append((f"GPU lstm {cfg} {mode} >= {lim:.2f}x PyTorch cuDNN",
                        f"{row['torch-cudnn']:.2f}x",
                        "yes" if row["torch-cudnn"] >= lim else "no"))
    return out


def _k(tps):
    return f"{tps / 1e3:,.0f}k" if tps >= 1e4 else f"{tps / 1e3:,.1f}k"


def markdown(run) -> str:
    d = run["device"]
    tag = f", {run['tag']}" if run.get("tag") else ""
    lines = [f"### GPU run ({run['mode']}{tag}, {run['started_utc']}, {run['wall_s']:.0f} s)", "",
             f"- command: `{run['command']}`",
             f"- JAX: {d['jax_backend']} backend, {d['jax_device']} x{d['jax_device_count']}; "
             f"PyTorch CUDA: {d['torch_cuda']}"
             + (f", {d['torch_device']}, cuDNN {d.get('cudnn')}" if d.get("torch_device") else ""),
             "- versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items() if v), ""]
    if run["mode"] == "smoke":
        lines += ["Smoke run (tiny sizes; a self-test of the script, not a measurement).", ""]
    lines += ["tok/s = batch x T / median step time; ratios = jaxrnn / peer (> 1: jaxrnn "
              "faster); all libraries of a row timed interleaved on the same device.", "",
              "| config | mode | cell | jaxrnn tok/s (spread) | compile s | Flax | "
              "PyTorch cuDNN |", "|---|---|---|---|---|---|---|"]
    for g in run["groups"]:
        peers = {r["lib"]: r for r in g if r["lib"] != "jaxrnn"}
        for r in g:
            if r["lib"] != "jaxrnn":
                continue
            cols = []
            for lib in ("flax", "torch-cudnn"):
                p = peers.get(lib)
                vs = None if p is None else r["tokens_per_s"] / p["tokens_per_s"]
                cols.append("-" if p is None else f"{_k(p['tokens_per_s'])} ({vs:.2f}x)")
            lines.append(f"| {r['config']['name']} | {r['mode']} | {r['cell']} | "
                         f"{_k(r['tokens_per_s'])} (±{50 * r['spread']:.0f}%) | "
                         f"{r['compile_s']:.2f} | " + " | ".join(cols) + " |")
    tg = targets(run)
    if tg:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in tg]
    if run["notes"]:
        lines += ["", "Notes: " + "; ".join(sorted(set(run["notes"])))]
    return "\n".join(lines)


def write_markdown(run, path: Path) -> str:
    """Put this run's table into ``path``'s GPU section, one block per device and run mode."""
    from benchmarks import mdblocks

    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if mdblocks.find(text, "gpu") is None:
        text = mdblocks.merge(text, "gpu", "## GPU\n")
    device = run["device"]["torch_device"] or run["device"]["jax_device"]
    key = f"gpu / {device} / {run['mode']}" + (f"-{run['tag']}" if run.get("tag") else "")
    path.write_text(mdblocks.merge(text, key, markdown(run), parent="gpu"))
    return key


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes, runs without a GPU (a self-test, not a measurement)")
    ap.add_argument("--configs", nargs="*", default=["A", "B", "C"], choices=sorted(CONFIGS))
    ap.add_argument("--sweep", nargs="*", type=int, default=list(SWEEP_T),
                    help="sequence lengths of the LSTM/GRU sweep (hidden 256, batch 8)")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--cells", nargs="*", help="jaxrnn cells (default: every one with a peer)")
    ap.add_argument("--skip-cells", nargs="*", default=[])
    ap.add_argument("--modes", nargs="*", default=["forward", "train"],
                    choices=["forward", "train"])
    ap.add_argument("--peers", nargs="*", default=["flax", "torch-cudnn"],
                    choices=["flax", "torch-cudnn"])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and Markdown")
    ap.add_argument("--tag", default="", help="added to the file names (e.g. a session stage)")
    ap.add_argument("--markdown", type=Path, default=None,
                    help="also write the table into this file's GPU section")
    ap.add_argument("--render", nargs="*", type=Path, default=None,
                    help="measure nothing: print (and with --markdown write) the tables of "
                         "these saved JSON records (e.g. brought back from a GPU machine)")
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error(f"--reps: expected >= 1, got {args.reps}")
    if args.render is not None:
        runs = [json.loads(p.read_text()) for p in args.render]
        for run in runs:
            print(markdown(run) + "\n")
            if args.markdown is not None:
                print(f"updated {args.markdown} (block {write_markdown(run, args.markdown)!r})",
                      file=sys.stderr)
        return runs

    import jax

    from benchmarks.harness import machine, versions

    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    if jax.default_backend() != "gpu" and not args.smoke:
        log(f"no GPU: JAX's default backend is {jax.default_backend()!r} (devices "
            f"{jax.devices()}); run with --smoke for the CPU self-test. No figures written.")
        return None
    jobs = plan(args)
    started = _dt.datetime.now(_dt.timezone.utc)
    mode = "smoke" if args.smoke else "gpu"
    run = {"started_utc": started.isoformat(timespec="seconds"), "mode": mode,
           "command": "python -m benchmarks.gpu "
                      + " ".join(argv if argv is not None else sys.argv[1:]),
           "device": device_info(), "machine": machine(), "versions": versions(),
           "groups": [], "notes": [],
           "wall_s": 0.0, "tag": args.tag}
    if jax.default_backend() != "gpu":
        run["notes"].append(f"no GPU: JAX ran on {jax.default_backend()} (smoke run)")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu-{started.strftime('%Y%m%dT%H%M%SZ')}-{mode}" + (f"-{args.tag}" if args.tag else "")
    json_path = args.out / f"{stem}.json"
    t0 = time.perf_counter()
    try:
        for cfg, m, entries in jobs:
            groups = {}
            for e in entries:
                groups.setdefault(e.peer, []).append(e)
            for family, group in groups.items():
                recs, notes = measure_group(cfg, m, family, group, args.peers, args.reps, log)
                run["groups"].append(recs)
                run["notes"] += notes
                run["wall_s"] = time.perf_counter() - t0
                json_path.write_text(json.dumps(run, indent=1))  # kept if the run is cut short
    except KeyboardInterrupt:  # gpu_session.sh's time limit (SIGINT): report what was measured
        run["notes"].append(f"cut short after {time.perf_counter() - t0:.0f} s "
                            f"({len(run['groups'])} groups measured)")
        json_path.write_text(json.dumps(run, indent=1))
    text = markdown(run)
    (args.out / f"{stem}.md").write_text(text + "\n")
    print(text)
    if args.markdown is not None:
        key = write_markdown(run, args.markdown)
        log(f"updated {args.markdown} (block {key!r})")
    log(f"wrote {json_path}; total {run['wall_s']:.0f} s")
    return run


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 2)  # 2: no GPU and no --smoke, nothing measured
