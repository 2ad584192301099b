"""The benchmark harness on a tiny configuration (no timing assertions: only that it runs and
that what it reports is consistent with its own raw measurements)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("matplotlib")

import jaxrnn  # noqa: E402
from benchmarks import contention, harness, mdblocks, plan, report, summary  # noqa: E402
from benchmarks.registry import all_cells  # noqa: E402
from jaxrnn.cells import registry as cell_registry  # noqa: E402
from jaxrnn.engine.backends import cpu_kernels  # noqa: E402


def test_registry_covers_every_cell_factory():
    entries, _ = all_cells()
    names = {e.name for e in entries}
    # every registered cell of feature sequences that is not an option of another's factory
    assert {n for n, s in cell_registry.REGISTRY.items()
            if s.inputs == "features" and not s.options} <= names
    for e in entries:
        cell = e.make(4)
        assert isinstance(cell, jaxrnn.Cell)
        assert e.peer is None or e.peer in cell_registry.peer_references()
    # --quick's "kernel" cells: a whole-sequence path, run through jaxrnn.run, with a peer
    kernel = {e.name for e in harness.cell_entries("kernel")[0]}
    assert {"lstm", "gru", "elman"} <= kernel
    for e in entries:
        has = e.make(4).name in cpu_kernels.ADAPTERS  # the kernel backend claims the family
        assert (e.name in kernel) == (has and e.run is None and e.peer is not None), e.name


@pytest.mark.slow
def test_flax_jordan_peer_computes_the_jordan_equations():
    # Flax has no Jordan cell; the harness's peer is one written as a Flax cell. It must be the
    # same network as jaxrnn.jordan(H, H), or the ratio compares different work.
    nn = pytest.importorskip("flax.linen")
    from benchmarks.competitors import _flax_jordan_cell

    B, T, F, H = 3, 6, 4, 5
    x = jax.random.normal(jax.random.key(0), (B, T, F))
    rnn = nn.RNN(_flax_jordan_cell(nn)(H))
    variables = rnn.init(jax.random.key(1), x)
    ys_flax = rnn.apply(variables, x)
    v = variables["params"]["cell"]
    params = jaxrnn.cells.JordanParams(
        w_x=v["i"]["kernel"], w_y_h=v["h"]["kernel"], b=v["i"]["bias"],
        w_y=v["o"]["kernel"], b_y=v["o"]["bias"])
    _, ys = jaxrnn.run(jaxrnn.jordan(H, H), params, x)
    np.testing.assert_allclose(ys, ys_flax, atol=1e-5)


@pytest.mark.slow
def test_tiny_contended_run_writes_consistent_records(tmp_path):
    # the smallest mode of the harness, quiet and contended, with the peers' solo check: the
    # same path as `python -m benchmarks --report`, on a tiny configuration
    md = tmp_path / "BENCH.md"
    harness.main(["--tiny", "--contended", "--solo-check", "--cells", "lstm", "--peers",
                  "flax", "--reps", "3", "--busy-reps", "2", "--solo-reps", "2",
                  "--out", str(tmp_path), "--markdown", str(md)])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(f.endswith("-tiny-contended.json") for f in files)
    assert any(f.endswith("-tiny-contended.png") for f in files)
    saved = json.loads(next(tmp_path.glob("*-tiny-contended.json")).read_text())
    summ = json.loads(next(tmp_path.glob("*-tiny-contended-summary.json")).read_text())
    recs = saved["sections"][0]["records"]
    libs = {(r["lib"], r["mode"], r["contention"]) for r in recs}
    assert libs == {(lib, mode, c) for lib in ("jaxrnn", "flax") for mode in ("forward", "train")
                    for c in ("quiet", "busy")}
    for r in recs:
        assert r["reps"] == (3 if r["contention"] == "quiet" else 2) == len(r["times_s"])
        # tokens/s is batch * T over the median of the raw step times
        assert r["median_s"] == pytest.approx(float(np.median(r["times_s"])))
        assert r["tokens_per_s"] == pytest.approx(2 * 8 / r["median_s"])
        q1, q3 = np.percentile(r["times_s"], [25, 75])
        assert r["spread"] == pytest.approx((q3 - q1) / r["median_s"])
        assert r["compile_s"] > 0
    # every contended row ran beside its own busy process, and none is left running
    busy = [r for r in recs if r["contention"] == "busy"]
    assert all(len(r["busy_pids"]) == 1 for r in busy)
    assert saved["busy_pids"] == sorted({r["busy_pids"][0] for r in busy})
    assert saved["busy_left_running"] == []
    assert not any(contention.is_running(pid) for pid in saved["busy_pids"])
    # the summary's ratios and contended / quiet are the raw records' own
    for mode in ("forward", "train"):
        (row,) = [r for r in summ["rows"] if r["mode"] == mode]
        get = {(r["lib"], r["contention"]): r["tokens_per_s"] for r in recs if r["mode"] == mode}
        assert row["vs"]["flax"] == pytest.approx(get["jaxrnn", "quiet"] / get["flax", "quiet"])
        assert row["busy_vs"]["flax"] == pytest.approx(get["jaxrnn", "busy"] / get["flax", "busy"])
        assert row["busy_over_quiet"] == pytest.approx(get["jaxrnn", "busy"]
                                                       / get["jaxrnn", "quiet"])
        # the solo check: the same step alone (its own job), quiet, against the in-harness time
        (solo,) = [s for s in saved["solo"] if s["mode"] == mode]
        assert solo["lib"] == "flax" and solo["contention"] == "quiet" and solo["reps"] == 2
        (peer,) = [p for p in summ["peer_rows"] if p["mode"] == mode]
        inh = next(r["median_s"] for r in recs if r["lib"] == "flax" and r["mode"] == mode
                   and r["contention"] == "quiet")
        assert peer["harness_over_solo"] == pytest.approx(inh / solo["median_s"])
    text = md.read_text()
    key = "cpu " + summary.cpu_name(saved["machine"])
    assert mdblocks.keys(text) == [key]
    section = mdblocks.get(text, key)
    assert "| tiny | forward | lstm |" in section and "python -m benchmarks" in section
    assert "solo check" in section and "Targets (issue 26)" in section
    m = saved["machine"]
    assert len(m["loadavg_before"]) == 3 and len(m["loadavg_after"]) == 3


def test_report_plan_times_each_library_alone_in_its_own_worker():
    args = harness._parser().parse_args(["--report", "--peers", "flax", "torch",
                                         "--once-peers", "equinox"])
    jobs = harness.plan(args)
    main_jobs = [s for s, _ in jobs if s.get("stage") == "main"]
    # one worker per library and repeat, each holding only that library's rows
    assert [(s["lib"], s["repeat"]) for s in main_jobs] == [
        ("jaxrnn", 0), ("flax", 0), ("torch", 0),
        ("torch", 1), ("flax", 1), ("jaxrnn", 1),  # every other repeat in reverse order
        ("jaxrnn", 2), ("flax", 2), ("torch", 2)]
    for s in main_jobs:  # contended in two of the three runs
        assert s["contention"] == (["quiet"] if s["repeat"] == 2 else ["quiet", "busy"])
        assert s["reps"] == 20 and s["busy_reps"] == 10 and s["row_seconds"] == 3.0
        names = {r["config"]["name"] for r in s["rows"]}
        assert names == {"A", "B", "C"}
        if s["lib"] == "jaxrnn":
            assert {r["cell"] for r in s["rows"]} >= {"lstm", "gru", "elman"}
        else:
            assert {r["cell"] for r in s["rows"]} <= set(plan.PEER_FAMILIES[s["lib"]])
    c = next(r for r in main_jobs[0]["rows"] if r["config"]["name"] == "C")["config"]
    assert (c["batch"], c["T"], c["features"], c["hidden"]) == (128, 64, 128, 512)
    # solo checks: one fresh worker per peer row, quiet, after the repeated workers; equinox
    # timed once, after them; all of these (and the repeats after the first) may be cut by
    # the budget
    later = jobs[len(main_jobs):]
    assert all(s.get("optional") for s, _ in later)
    assert [s.get("optional", False) for s in main_jobs] == [False] * 3 + [True] * 6
    solo = [s for s, _ in later if s["stage"] == "solo"]
    peer_rows = [(s["lib"], r["config"]["name"], r["mode"], r["cell"])
                 for s in main_jobs if s["lib"] != "jaxrnn" and s["repeat"] == 0
                 for r in s["rows"]]
    assert all(len(s["rows"]) == 1 and s["contention"] == ["quiet"] for s in solo)
    solo_rows = [(s["lib"], *(s["rows"][0][k] for k in ("config", "mode", "cell"))) for s in solo]
    solo_rows = [(lib, cfg["name"], mode, cell) for lib, cfg, mode, cell in solo_rows]
    once = [s for s, _ in later if s["stage"] == "once"]
    assert [(s["lib"], s["repeat"]) for s in once] == [("equinox", 0)]
    eq_rows = [("equinox", r["config"]["name"], r["mode"], r["cell"]) for r in once[0]["rows"]]
    assert sorted(solo_rows) == sorted(peer_rows + eq_rows)
    # --smoke: the same jobs at tiny sizes
    small = harness.plan(harness._parser().parse_args(
        ["--report", "--peers", "flax", "torch", "--once-peers", "equinox", "--smoke"]))
    assert [(s["lib"], s["stage"], len(s["rows"])) for s, _ in small] == [
        (s["lib"], s["stage"], len(s["rows"])) for s, _ in jobs]
    assert all(r["config"]["T"] == 8 for s, _ in small for r in s["rows"])


@pytest.mark.slow
def test_smoke_report_runs_every_library_alone_in_a_fresh_process(tmp_path):
    # the lead's --report command end to end at tiny sizes: real worker processes, one at a time
    run = harness.main(["--report", "--smoke", "--configs", "A", "--cells", "lstm", "--peers",
                        "flax", "--once-peers", "--repeat", "2", "--out", str(tmp_path)])
    workers = run["workers"]
    assert [(w["lib"], w["stage"], w["repeat"]) for w in workers] == [
        ("jaxrnn", "main", 0), ("flax", "main", 0), ("flax", "main", 1), ("jaxrnn", "main", 1),
        ("flax", "solo", 0), ("flax", "solo", 0)]
    assert len({w["pid"] for w in workers}) == len(workers)  # a fresh process each
    listed = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()
    for w in workers:  # and no other worker of the harness alive beside it
        if listed:
            assert w["siblings_start"] == [] and w["siblings_end"] == []
    assert len(run["solo"]) == 2 and run["skipped"] == []
    assert not (Path(harness.ROOT) / "BENCHMARKS.md").read_text().count("smoke-A")


def test_budget_skips_optional_jobs_by_the_times_measured_so_far(tmp_path, monkeypatch):
    calls, now = [], [0.0]

    def fake_spawn(spec, alloc, inprocess, log, cache=None):  # each job "takes" its wall_s
        calls.append(spec)
        now[0] += wall[spec["stage"]]
        return {"spec": spec, "records": [], "notes": [], "ceiling_flops": [],
                "allocator": alloc, "kernel_threads": None, "label": alloc,
                "wall_s": wall[spec["stage"]]}

    monkeypatch.setattr(harness, "_spawn", fake_spawn)
    monkeypatch.setattr(harness, "_clock", lambda: now[0])
    argv = ["--tiny", "--cells", "lstm", "--peers", "flax", "--solo-check", "--repeat", "3",
            "--out", str(tmp_path), "--no-markdown"]
    # repeat 0 takes 2 x 200 s: a second repeat (400 s more) does not fit 10 minutes, and is
    # skipped whole (both its jobs, and the third repeat); the solo checks, of unknown length,
    # run until their own times say the next would not fit
    wall = {"main": 200.0, "solo": 150.0}
    run = harness.main(argv + ["--budget", "10"])
    assert [(s["lib"], s["stage"], s["repeat"]) for s in calls] == [
        ("jaxrnn", "main", 0), ("flax", "main", 0), ("flax", "solo", 0)]
    assert run["skipped"] == ["lib flax main repeat 1", "lib jaxrnn main repeat 1",
                              "lib jaxrnn main repeat 2", "lib flax main repeat 2",
                              "lib flax solo repeat 0 tiny train lstm"]
    calls.clear()
    now[0] = 0.0
    wall = {"main": 1.0, "solo": 1.0}
    run = harness.main(argv + ["--budget", "10"])
    assert len(calls) == 8 and run["skipped"] == []  # 3 x 2 main jobs, 2 solo checks


def test_sibling_processes_sees_another_worker_of_the_same_parent(tmp_path):
    from benchmarks import libworker

    code = "from benchmarks.libworker import sibling_processes as s; print(s())"
    env = dict(os.environ, PYTHONPATH=str(harness.ROOT))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout
    finally:
        sleeper.kill()
        sleeper.wait()
    seen = eval(out)  # a list of PIDs, or None where /proc lists no children
    if seen is None:
        pytest.skip("/proc does not list children here")
    assert sleeper.pid in seen


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: the kernels tune nothing")
def test_a_jaxrnn_row_is_tuned_before_its_timed_calls(monkeypatch):
    # the worker calls the row's step until the kernels' plan table has settled its classes,
    # so that no timed call runs a candidate plan (issue 26)
    from benchmarks import libworker
    from jaxrnn import kernels

    if not kernels.available():
        pytest.skip(f"kernels: {kernels.status()}")
    monkeypatch.setenv("JAXRNN_KERNEL_TUNE", "quiet")
    monkeypatch.delenv("JAXRNN_KERNEL_THREADS", raising=False)
    kernels.reset_plans()
    cell = jaxrnn.elman(64)
    p = cell.init(jax.random.key(0), 8)
    xs = jax.random.normal(jax.random.key(1), (8, 48, 8))
    step = jax.jit(lambda p, xs: jaxrnn.run(cell, p, xs)[1])

    class Runner:
        def call(self):
            return jax.block_until_ready(step(p, xs))

    calls = libworker._tune_row(Runner(), log=lambda msg: None)
    entries = kernels.plans()
    kernels.reset_plans()
    assert entries and all(e["state"] == "measured" for e in entries)
    assert calls == 2 + 3 * len(entries[0]["tried"])  # warm-up, samples, one to see it settled


def test_a_long_row_stops_at_its_time_limit_with_half_its_calls():
    from benchmarks import libworker

    calls = []

    class Slow:
        def call(self):
            calls.append(1)
            time.sleep(0.03)

    times = libworker.timed_calls(Slow(), reps=8, warmup=1, min_reps=4, max_s=0.05)
    assert len(times) == 4 and len(calls) == 5  # the limit passed after 2, half of 8 kept
    assert all(t >= 0.03 for t in times)
    calls.clear()
    assert len(libworker.timed_calls(Slow(), reps=3, warmup=0)) == 3 == len(calls)


def test_raw_results_go_outside_git():
    assert harness.RESULTS == Path(harness.ROOT) / "bench-results"
    git = subprocess.run(["git", "check-ignore", "-q", "bench-results/run.json"],
                         cwd=harness.ROOT, capture_output=True)
    if git.returncode == 128:
        pytest.skip("not a git checkout")
    assert git.returncode == 0


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        harness.main(["--reps", "0"])
    with pytest.raises(ValueError, match="--cells: unknown"):
        harness.cell_entries(["no_such_cell"])


@pytest.mark.slow
def test_extras_convlstm_and_min_sweep_tiny():
    from benchmarks import extras

    video = dict(name="tinyvideo", batch=2, T=3, height=4, width=4, in_channels=1, channels=2)
    res = harness.worker({"kind": "convlstm", "config_dims": video, "modes": ["forward", "train"],
                          "reps": 2, "ceiling_n": 64})
    assert {r["mode"] for r in res["records"]} == {"forward", "train"}
    for r in res["records"]:
        assert r["tokens_per_s"] == pytest.approx(2 * 3 / r["median_s"])
    sweep = harness.worker({"kind": "minsweep", "Ts": [4], "modes": ["forward", "train"],
                            "reps": 2, "dims": dict(batch=2, features=3, hidden=4),
                            "cells": ["lstm", "gru", "min_gru"], "ceiling_n": 64})
    run = {"sections": [dict(res, allocator="default"), dict(sweep, allocator="default")]}
    W = extras.min_sweep_winners(run)
    assert set(W) == {(4, "forward"), (4, "train")}
    names = {r["cell"] for r in sweep["records"]}
    assert {"lstm", "gru"} <= names
    for win, tps in W.values():
        assert tps[win] == max(tps.values())
    text = "\n".join(extras.markdown_parts(run))
    assert "ConvLSTM" in text and "minGRU" in text


# --------------------------------------------------------------------------- contended mode

def _wait_until(pred, timeout=5.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


# it burns a core for half a second beside the other xdist worker: slow (killing by pid is
# also test_busy_process_is_killed_on_ctrl_c_and_errors, in the default run)
@pytest.mark.slow
def test_busy_process_spins_and_is_killed_by_pid():
    with contention.busy_processes(1) as procs:
        (b,) = procs
        assert contention.is_running(b.pid) and b.pid in contention.leftover_pids()
        cpu0 = contention.cpu_seconds(b.pid)
        time.sleep(0.5)
        # it burns CPU (a spin loop, not a sleeper)
        assert contention.cpu_seconds(b.pid) - cpu0 > 0.05
        assert contention.share_used(procs) > 0.1
    assert b.popen.returncode is not None  # killed and reaped
    assert not contention.is_running(b.pid)
    assert b.pid not in contention.leftover_pids()


def test_busy_process_is_killed_on_ctrl_c_and_errors():
    pids = []
    with pytest.raises(KeyboardInterrupt):
        with contention.busy_processes(2) as procs:
            pids += [b.pid for b in procs]
            assert len(set(pids)) == 2 and all(map(contention.is_running, pids))
            raise KeyboardInterrupt
    assert not any(map(contention.is_running, pids))
    with pytest.raises(ValueError, match="n: expected"):
        with contention.busy_processes(-1):
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_busy_process_dies_with_a_killed_harness(sig):
    # SIGTERM runs the harness's cleanup; SIGKILL leaves it none: the busy process must still go
    code = ("import time\nfrom benchmarks import contention\n"
            "with contention.busy_processes(1) as p:\n"
            "    print(p[0].pid, flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            cwd=Path(harness.ROOT))
    pid = int(proc.stdout.readline())
    assert contention.is_running(pid)
    proc.send_signal(sig)
    proc.wait(timeout=10)
    proc.stdout.close()
    assert _wait_until(lambda: not contention.is_running(pid))
    assert pid not in contention.leftover_pids()


# --------------------------------------------------------------------------- machine record

AMD_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse4_2 avx avx2 fma f16c

processor\t: 1
model name\t: something else
"""


def test_cpuinfo_reads_the_first_processor():
    info = harness.cpuinfo(AMD_CPUINFO)
    assert info["model name"] == "AMD EPYC" and info["vendor_id"] == "AuthenticAMD"
    assert info["flags"].split() == ["fpu", "sse4_2", "avx", "avx2", "fma", "f16c"]


def test_machine_record_has_the_cpu_fields():
    m = harness.machine()
    for key in ("cpu", "vendor", "isa", "cores", "usable_cores", "loadavg", "memory_bytes"):
        assert key in m
    assert m["cores"] == os.cpu_count() and len(m["loadavg"]) == 3
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    text = cpuinfo.read_text()
    # compared with /proc/cpuinfo read here, independently of harness.cpuinfo
    model = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name"))
    flags = set(next(line.split(":", 1)[1] for line in text.splitlines()
                     if line.startswith("flags")).split())
    assert m["cpu"] == model
    assert set(m["isa"]) == set(harness.ISA_FLAGS)
    for flag in ("avx2", "avx512f", "avx512bw", "avx512vl", "fma", "amx_tile"):
        assert m["isa"][flag] == (flag in flags)
    assert report.machine_line({"machine": m}).startswith(model)


# --------------------------------------------------------------------------- per-CPU report

def _rec(lib, cell, mode, tps, contention_="quiet", cfg="A", family=None, kernel=True,
         repeat=0, spread=0.05):
    dims = dict(name=cfg, batch=4, T=8, features=2, hidden=3, out=1)
    rec = {"config": dims, "mode": mode, "lib": lib, "cell": cell,
           "peer_family": family or cell, "note": "", "contention": contention_,
           "median_s": 32 / tps, "tokens_per_s": tps, "spread": spread, "min_s": 32 / tps,
           "max_s": 32 / tps, "reps": 20, "compile_s": 0.1, "mem_bytes": None,
           "repeat": repeat}
    if lib == "jaxrnn":
        rec.update(kernel=kernel, flops=1e9 * 32 / tps)  # 1 GFLOP/s at tps
    return rec


def _fake_run(cpu="Test CPU 9000", mode="report", started="2026-01-01T00:00:00+00:00",
              jq=(300.0,), jb=(100.0,), fq=(200.0,), fb=(50.0,), tq=(300.0,), ceiling=1.25e9,
              configs=("A",), cells=("lstm",), peers=("flax", "torch")):
    """A run of ``len(jq)`` repeats: per repeat r, jaxrnn at jq[r] tok/s quiet and jb[r]
    contended, Flax at fq[r] and fb[r], PyTorch at tq[r] quiet."""
    sections = []
    for r in range(len(jq)):
        for cfg in configs:
            recs = []
            for m in ("forward", "train"):
                for cell in cells:
                    recs += [_rec("jaxrnn", cell, m, jq[r], cfg=cfg, repeat=r),
                             _rec("jaxrnn", cell, m, jb[r], "busy", cfg=cfg, repeat=r)]
                for fam in dict.fromkeys(cells):
                    if "flax" in peers:
                        recs += [_rec("flax", fam, m, fq[r], cfg=cfg, repeat=r),
                                 _rec("flax", fam, m, fb[r], "busy", cfg=cfg, repeat=r)]
                    if "torch" in peers:
                        recs.append(_rec("torch", fam, m, tq[r], cfg=cfg, repeat=r))
            sections.append({"spec": {"kind": "config", "config": cfg, "repeat": r},
                             "allocator": "default", "label": "default", "records": recs,
                             "ceiling_flops": [ceiling], "notes": []})
    return {"started_utc": started, "wall_s": 60.0, "mode": mode,
            "command": "python -m benchmarks --report", "versions": {"jax": "x"},
            "machine": {"cpu": cpu, "cpu_family_model_stepping": "6/167/1", "cores": 2,
                        "memory_bytes": 2**30, "platform": "p", "isa": {"avx2": True},
                        "loadavg_before": [1, 1, 1], "loadavg_after": [2, 2, 2]},
            "allocators": {"tuned": {"MALLOC_TOP_PAD_": "1"}}, "sections": sections,
            "solo": []}


def _target(summ, start):
    (t,) = [t for t in summ["targets"] if t["target"].startswith(start)]
    return t


def test_ratios_are_medians_of_each_runs_own_ratio():
    # three repeats: the ratio is taken inside each run (3.0, 1.0, 1.5), then the median (1.5);
    # the ratio of the medians would be 300 / 200 = 1.5 only by chance, so pick it apart
    run = _fake_run(jq=(300.0, 100.0, 600.0), fq=(100.0, 100.0, 400.0),
                    jb=(150.0, 20.0, 300.0), fb=(100.0, 100.0, 100.0), tq=(300.0, 200.0, 400.0))
    summ = summary.summarise_run(run)
    row = next(r for r in summ["rows"] if r["mode"] == "forward")
    assert row["repeats"] == 3
    assert row["vs"]["flax"] == pytest.approx(1.5)  # median of 3.0, 1.0, 1.5
    assert row["vs"]["torch"] == pytest.approx(1.0)  # median of 1.0, 0.5, 1.5
    assert row["busy_vs"]["flax"] == pytest.approx(1.5)  # median of 1.5, 0.2, 3.0
    assert row["busy_over_quiet"] == pytest.approx(0.5)  # median of 0.5, 0.2, 0.5
    assert row["tokens_per_s"] == 300.0
    # 1 GFLOP/s at the row's rate: its share of a 1.25 GFLOP/s ceiling, median over runs
    assert row["ceiling_share"] == pytest.approx(0.8)
    # json-able as written beside the raw record
    assert json.loads(json.dumps(summ))["rows"][0]["vs"] == summ["rows"][0]["vs"]
    assert "kernels off" not in summary.markdown(summ)
    # a full run's variant of the same cell (CPU kernels off): jaxrnn / variant, per run
    for s in run["sections"]:
        s["records"].append(dict(next(r for r in s["records"] if r["lib"] == "jaxrnn"),
                                 lib="jaxrnn-xla-fused", tokens_per_s=150.0))
    row = next(r for r in summary.summarise_run(run)["rows"] if r["mode"] == "forward")
    assert row["vs_variant"] == {"jaxrnn-xla-fused": pytest.approx(2.0)}  # 2, 0.67, 4
    assert "/ kernels off |" in summary.markdown(summary.summarise_run(run))


def test_issue_26_targets_are_judged_at_their_thresholds():
    # jaxrnn 1.5x Flax quiet (met exactly at A), 1.0x PyTorch, contended 2.0x Flax but 33% of
    # its quiet throughput, 0.8 of the ceiling, spread 5%
    summ = summary.summarise_run(_fake_run())
    t = _target(summ, "quiet, every kernel cell >= 1.5x Flax at A and B")
    assert (t["met"], t["rows"], t["worst"]) == (True, 2, ["lstm A forward", pytest.approx(1.5)])
    assert _target(summ, "quiet, every kernel cell >= 1.2x Flax at C")["met"] is None
    assert _target(summ, "quiet, LSTM >= 1.0x PyTorch")["met"] is True
    assert _target(summ, "one busy process, every kernel cell >= 1.2x Flax")["met"] is True
    t = _target(summ, "one busy process, every kernel cell >= 50%")
    assert (t["met"], t["met_rows"], len(t["misses"])) == (False, 0, 2)
    assert _target(summ, "quiet per-call spread")["met"] is True
    assert _target(summ, "LSTM and GRU training at A >= 70%")["worst"][1] == pytest.approx(0.8)
    # just under each line: 1.49x Flax, 0.99x PyTorch, 11% spread, 69% of the ceiling
    low = _fake_run(jq=(298.0,), tq=(301.0,), ceiling=1e9 / 0.69 * 300 / 298)
    for rec in low["sections"][0]["records"]:
        rec["spread"] = 0.11
    summ = summary.summarise_run(low)
    for start in ("quiet, every kernel cell >= 1.5x", "quiet, LSTM >= 1.0x PyTorch",
                  "quiet per-call spread", "LSTM and GRU training at A >= 70%"):
        assert _target(summ, start)["met"] is False, start
    text = summary.markdown(summ)
    assert "| quiet, LSTM >= 1.0x PyTorch at A, B and C | 0.99x (lstm A forward) | 0 of 2 | " \
           "**no**: lstm A forward 0.99x, lstm A train 0.99x |" in text


def test_solo_check_flags_peers_beyond_ten_percent():
    run = _fake_run()
    flax_fwd = next(r for r in run["sections"][0]["records"] if r["lib"] == "flax"
                    and r["mode"] == "forward" and r["contention"] == "quiet")
    flax_tr = next(r for r in run["sections"][0]["records"] if r["lib"] == "flax"
                   and r["mode"] == "train" and r["contention"] == "quiet")
    # in the harness 0.16 s a call; alone 0.15 s (1.07: fine) and 0.128 s (1.25: flagged)
    run["solo"] = [dict(flax_fwd, median_s=flax_fwd["median_s"] / 1.07, label="default"),
                   dict(flax_tr, median_s=flax_tr["median_s"] / 1.25, label="default")]
    summ = summary.summarise_run(run)
    t = _target(summ, "peers' in-harness time within 10%")
    assert (t["met"], t["rows"]) == (False, 2)
    assert t["misses"] == [["Flax lstm A train", pytest.approx(0.25)]]
    text = summary.markdown(summ)
    assert "**1.25**" in text and "| 1.07 |" not in text and " 1.07 |" in text


def test_report_section_of_a_full_comparison_fits_150_lines(tmp_path):
    cells = cell_registry.names(kernel=True)  # the kernel cells, each with its peer family
    run = _fake_run(configs=("A", "B", "C"), cells=cells)
    for s in run["sections"]:  # peers of every family, and the two once-timed peers
        for r in list(s["records"]):
            if r["lib"] == "flax":
                for lib in ("equinox", "keras"):
                    s["records"].append(dict(r, lib=lib))
    summ = summary.summarise_run(run)
    assert len(summ["rows"]) == len(cells) * 3 * 2
    text = summary.markdown(summ)
    assert text.count("\n") + 1 <= summary.MAX_SECTION_LINES
    assert "/ Equinox" in text and "/ Keras" in text
    assert "## CPU: Test CPU 9000 (family 6 model 167)" in text
    # BENCHMARKS.md: this CPU's section replaced, every other block kept byte for byte
    md = tmp_path / "BENCHMARKS.md"
    md.write_text((Path(harness.ROOT) / "BENCHMARKS.md").read_text())
    before = md.read_text()
    others = {k: mdblocks.get(before, k) for k in mdblocks.keys(before)}
    key = summary.write_benchmarks_md(summ, md)
    summary.write_benchmarks_md(summary.summarise_run(
        _fake_run(started="2026-02-02T00:00:00+00:00")), md)
    text = md.read_text()
    assert text.startswith(before.rstrip("\n"))
    for k, body in others.items():
        assert mdblocks.get(text, k) == body
    assert mdblocks.keys(text).count(key) == 1
    assert "2026-02-02" in mdblocks.get(text, key) and "2026-01-01" not in text[len(before):]
    path = summary.write_summary(summ, tmp_path / "summaries")
    assert path.name == "test-cpu-9000-family-6-model-167.json"
    assert json.loads(path.read_text())["targets"] == json.loads(json.dumps(summ["targets"]))


def test_benchmarks_md_is_a_report_per_cpu_model():
    text = (Path(harness.ROOT) / "BENCHMARKS.md").read_text()
    cpus = [k for k in mdblocks.keys(text) if k.startswith("cpu ") and " / " not in k]
    assert cpus and "gpu" in mdblocks.keys(text)
    for k in cpus:
        body = mdblocks.get(text, k)
        assert body.count("\n") <= summary.MAX_SECTION_LINES, k
    assert "benchmarks/NOTES.md" in text


def test_report_warns_when_the_contention_or_the_quiet_is_not_real():
    run = _fake_run()
    assert report.warnings(run) == []
    run["machine"]["loadavg_before"] = [3.0, 1, 1]  # 2 cores
    for r in run["sections"][0]["records"]:
        if r["contention"] == "busy":
            r["busy_cores_used"] = 0.2
    run["workers"] = [{"siblings_start": [123], "siblings_end": []}]
    warn = report.warnings(run)
    assert any("load average before the run was 3.0 on 2 cores" in w for w in warn)
    assert any("in 2 of 2 contended groups" in w for w in warn)
    assert any("1 workers found another harness process" in w for w in warn)
    assert "**Caution:**" in summary.markdown(summary.summarise_run(run))


def test_median_joins_separate_runs_as_repeats(tmp_path):
    from benchmarks import median

    paths = []
    for i, (j, f) in enumerate(((300.0, 100.0), (100.0, 100.0), (600.0, 400.0))):
        p = tmp_path / f"run{i}.json"
        p.write_text(json.dumps(_fake_run(jq=(j,), fq=(f,))))
        paths.append(p)
    joined = median.join([json.loads(p.read_text()) for p in paths])
    assert sorted({s["spec"]["repeat"] for s in joined["sections"]}) == [0, 1, 2]
    summ = summary.summarise_run(joined)
    row = next(r for r in summ["rows"] if r["mode"] == "train")
    assert row["repeats"] == 3 and row["vs"]["flax"] == pytest.approx(1.5)
    md = tmp_path / "B.md"
    assert median.main([*map(str, paths), "--markdown", str(md)]) == 0
    assert "median of 3 runs per row" in md.read_text()
    with pytest.raises(ValueError, match="one CPU model"):
        median.join([_fake_run(), _fake_run(cpu="Other CPU")])


def test_md_blocks_replace_only_their_own_text():
    text = "# T\n\nintro\n"
    text = mdblocks.merge(text, "a", "## A\n")
    text = mdblocks.merge(text, "a / x", "one", parent="a")
    text = mdblocks.merge(text, "b", "B body")
    text = mdblocks.merge(text, "a / x", "two", parent="a")
    assert mdblocks.keys(text) == ["a", "a / x", "b"]
    assert mdblocks.get(text, "a / x") == "two\n" and mdblocks.get(text, "b") == "B body\n"
    assert text.startswith("# T\n\nintro\n") and "one" not in text
    with pytest.raises(ValueError, match="parent block 'zz' not found"):
        mdblocks.merge(text, "c", "x", parent="zz")
    with pytest.raises(ValueError, match="no '<!-- end: broken -->'"):
        mdblocks.get("<!-- begin: broken -->\nx\n", "broken")


# --------------------------------------------------------------------------- kernel threads

def test_kernel_threads_runs_each_setting_in_its_own_worker():
    args = harness._parser().parse_args(["--quick", "--contended", "--kernel-threads", "1,auto"])
    jobs = [spec for spec, _ in harness.plan(args) if spec["kind"] == "lib"]
    # jaxrnn once per setting; the peers, which do not read the variable, once
    assert [(j["lib"], j.get("kernel_threads")) for j in jobs] == [
        ("jaxrnn", "1"), ("jaxrnn", "auto"), ("flax", None), ("torch", None)]
    assert all(j["contention"] == ["quiet", "busy"] for j in jobs)
    assert {r["config"]["name"] for r in jobs[0]["rows"]} == {"A", "B"}
    # a fresh worker sees the setting in its environment and says so in its record
    res = harness._spawn({"kind": "compile", "Ts": [], "kernel_threads": "1", "ceiling_n": 64},
                         "default", False, print)
    assert res["env"].get("JAXRNN_KERNEL_THREADS") == "1"
    assert res["label"] == "default, threads=1"
    env = harness.worker_env("default", "default", {"JAXRNN_KERNEL_THREADS": "4"})
    assert "JAXRNN_KERNEL_THREADS" not in env
    # the peers' records stand beside each setting's jaxrnn records
    rec = lambda lib: {"config": {"name": "A"}, "repeat": 0, "lib": lib}  # noqa: E731
    results = [{"spec": {"kind": "lib", "lib": "jaxrnn"}, "label": f"default, threads={kt}",
                "allocator": "default", "kernel_threads": kt, "records": [rec("jaxrnn")]}
               for kt in ("1", "auto")]
    results.append({"spec": {"kind": "lib", "lib": "flax"}, "label": "default",
                    "allocator": "default", "kernel_threads": None, "records": [rec("flax")]})
    sections, solo = harness.assemble(results)
    assert [(s["label"], [r["lib"] for r in s["records"]]) for s in sections] == [
        ("default, threads=1", ["jaxrnn", "flax"]), ("default, threads=auto", ["jaxrnn", "flax"])]
    with pytest.raises(SystemExit):
        harness.main(["--kernel-threads", "0"])


# --------------------------------------------------------------------------- GPU section

def test_gpu_smoke_runs_without_a_gpu(tmp_path):
    from benchmarks import gpu

    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n<!-- begin: gpu -->\n## GPU\n\nnot lent\n<!-- end: gpu -->\n")
    run = gpu.main(["--smoke", "--cells", "lstm", "--modes", "forward", "--no-sweep",
                    "--reps", "2", "--out", str(tmp_path), "--markdown", str(md)])
    (group,) = run["groups"]
    libs = {r["lib"] for r in group}
    assert {"jaxrnn", "flax"} <= libs
    if run["device"]["torch_device"] is None:  # no CUDA here: the cuDNN rows are skipped, said
        assert "torch-cudnn" not in libs
        assert any("torch-cudnn: skipped" in n for n in run["notes"])
    R = gpu.ratios(run)
    j, f = (next(r for r in group if r["lib"] == lib) for lib in ("jaxrnn", "flax"))
    assert R[("smoke", "forward", "lstm")]["flax"] == pytest.approx(
        j["tokens_per_s"] / f["tokens_per_s"])
    saved = json.loads(next(tmp_path.glob("gpu-*-smoke.json")).read_text())
    assert saved["groups"] == run["groups"]
    text = md.read_text()
    assert "not lent" in text and "| smoke | forward | lstm |" in text
    assert "Smoke run" in text
