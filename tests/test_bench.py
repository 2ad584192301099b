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
from benchmarks import contention, harness, mdblocks, report  # noqa: E402
from benchmarks.registry import all_cells  # noqa: E402
from jaxrnn.engine.backends import cpu_kernels  # noqa: E402


def test_registry_covers_every_cell_factory():
    entries, _ = all_cells()
    names = {e.name for e in entries}
    for expected in ("elman", "jordan", "lstm", "gru", "fully_recurrent"):
        assert expected in names
    for e in entries:
        cell = e.make(4)
        assert isinstance(cell, jaxrnn.Cell)
        assert e.peer in (None, "lstm", "gru", "rnn", "jordan")
    # --quick's "kernel" cells: a whole-sequence path, run through jaxrnn.run, with a peer
    kernel = {e.name for e in harness._cell_entries("kernel")[0]}
    assert {"lstm", "gru", "elman"} <= kernel
    for e in entries:
        has = e.make(4).name in cpu_kernels.ADAPTERS  # the kernel backend claims the family
        assert (e.name in kernel) == (has and e.run is None and e.peer is not None), e.name


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


def test_tiny_contended_run_writes_consistent_records(tmp_path):
    # the smallest mode of the harness, quiet and contended: the same path as
    # `python -m benchmarks --quick --contended`, on a tiny configuration
    md = tmp_path / "BENCH.md"
    run = harness.main(["--tiny", "--contended", "--cells", "lstm", "--skip-peers", "equinox",
                        "keras", "torch", "--reps", "2", "--out", str(tmp_path),
                        "--markdown", str(md)])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(f.endswith("-tiny-contended.json") for f in files)
    assert any(f.endswith("-tiny-contended.png") for f in files)
    saved = json.loads(next(tmp_path.glob("*-tiny-contended.json")).read_text())
    recs = saved["sections"][0]["records"]
    libs = {(r["lib"], r["mode"], r["contention"]) for r in recs}
    assert libs == {(lib, mode, c) for lib in ("jaxrnn", "flax") for mode in ("forward", "train")
                    for c in ("quiet", "busy")}
    for r in recs:
        assert r["reps"] >= 2
        # tokens/s is batch * T over the median of the raw step times
        assert r["tokens_per_s"] == pytest.approx(2 * 8 / r["median_s"])
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["compile_s"] > 0
    # every contended group ran beside its own busy process, and none is left running
    busy = [r for r in recs if r["contention"] == "busy"]
    assert all(len(r["busy_pids"]) == 1 for r in busy)
    assert saved["busy_pids"] == sorted({r["busy_pids"][0] for r in busy})
    assert saved["busy_left_running"] == []
    assert not any(contention.is_running(pid) for pid in saved["busy_pids"])
    # the reported ratios are exactly jaxrnn's rate over the peer's, per mode and condition
    for cond in ("quiet", "busy"):
        R = report.ratios(run, cond)
        for mode in ("forward", "train"):
            j, f = (next(r for r in recs if r["lib"] == lib and r["mode"] == mode
                         and r["contention"] == cond) for lib in ("jaxrnn", "flax"))
            assert R[("default", "tiny", mode, "lstm")]["flax"] == pytest.approx(
                j["tokens_per_s"] / f["tokens_per_s"])
    C = report.contention_rows(run)
    for mode in ("forward", "train"):
        jq, jb = (next(r["tokens_per_s"] for r in recs if r["lib"] == "jaxrnn"
                       and r["mode"] == mode and r["contention"] == c) for c in ("quiet", "busy"))
        row = C[("default", "tiny", mode, "lstm")]
        assert (row["quiet"], row["busy"]) == (jq, jb)
    text = md.read_text()
    assert "| default | tiny | forward | lstm |" in text and "python -m benchmarks" in text
    assert "Quiet and contended" in text
    # the contended table's row: quiet and contended tok/s side by side, contended / quiet
    row = C[("default", "tiny", "forward", "lstm")]
    assert (f"| default | tiny | forward | lstm | {report._k(row['quiet'])} | "
            f"{report._k(row['busy'])} | {100 * row['busy'] / row['quiet']:.0f}% |") in text
    m = saved["machine"]
    assert len(m["loadavg_before"]) == 3 and len(m["loadavg_after"]) == 3


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        harness.main(["--reps", "0"])
    with pytest.raises(ValueError, match="--cells: unknown"):
        harness._cell_entries(["no_such_cell"])


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


def test_median_of_runs_judges_each_target(monkeypatch):
    from benchmarks import median

    per_run = [
        [("[default] lstm A train >= 1.5x Flax", "1.40x", "no"),
         ("[default] LSTM A train >= PyTorch", "1.10x", "yes"),
         ("[default] lstm A train >= 50% of FLOP ceiling", "60%", "yes")],
        [("[default] lstm A train >= 1.5x Flax", "1.70x", "yes"),
         ("[default] LSTM A train >= PyTorch", "0.90x", "no"),
         ("[default] lstm A train >= 50% of FLOP ceiling", "40%", "no")],
        [("[default] lstm A train >= 1.5x Flax", "1.60x", "yes"),
         ("[default] LSTM A train >= PyTorch", "0.95x", "no"),
         ("[default] lstm A train >= 50% of FLOP ceiling", "45%", "no")],
    ]
    monkeypatch.setattr(median, "targets", lambda run: per_run[run])
    rows = median.median_table([0, 1, 2]).splitlines()[2:]
    assert rows[0].endswith("| 1.40x | 1.70x | 1.60x | 1.60x | yes |")
    assert rows[1].endswith("| 1.10x | 0.90x | 0.95x | 0.95x | no |")
    assert rows[2].endswith("| 60% | 40% | 45% | 45% | no |")
    assert median.threshold("[tuned] gru B forward >= 1.2x best peer") == 1.2


# --------------------------------------------------------------------------- contended mode

def _wait_until(pred, timeout=5.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


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

def _rec(lib, cell, mode, tps, contention_="quiet", cfg="A", family=None, kernel=True):
    dims = dict(name=cfg, batch=4, T=8, features=2, hidden=3, out=1)
    return {"config": dims, "mode": mode, "lib": lib, "cell": cell,
            "peer_family": family or cell, "kernel": kernel, "flops": 1.0, "note": "",
            "contention": contention_, "median_s": 32 / tps, "tokens_per_s": tps,
            "spread": 0.1, "min_s": 32 / tps, "max_s": 32 / tps, "reps": 3,
            "compile_s": 0.1, "mem_bytes": None}


def _fake_run(cpu="Test CPU 9000", mode="quick-contended", started="2026-01-01T00:00:00+00:00",
              jq=300.0, jb=100.0, fq=200.0, fb=50.0):
    recs = []
    for m in ("forward", "train"):
        recs += [_rec("jaxrnn", "lstm", m, jq), _rec("flax", "lstm", m, fq),
                 _rec("jaxrnn", "lstm", m, jb, "busy"), _rec("flax", "lstm", m, fb, "busy")]
    return {"started_utc": started, "wall_s": 60.0, "mode": mode, "command": "python -m "
            "benchmarks --quick --contended", "versions": {"jax": "x"},
            "machine": {"cpu": cpu, "cores": 2, "memory_bytes": 2**30, "platform": "p",
                        "isa": {"avx2": True}, "loadavg_before": [1, 1, 1],
                        "loadavg_after": [2, 2, 2]},
            "allocators": {"tuned": {"MALLOC_TOP_PAD_": "1"}},
            "sections": [{"spec": {"kind": "config"}, "allocator": "default",
                          "label": "default", "records": recs, "ceiling_flops": [],
                          "notes": []}]}


def test_contended_targets_follow_the_records():
    # jaxrnn 300 -> 100 tok/s under contention, Flax 200 -> 50: 1.5x Flax quiet, 2.0x Flax
    # contended, and jaxrnn keeps 33% of its quiet throughput (target 40%)
    tg = {t: (v, ok) for t, v, ok in report.targets(_fake_run())}
    assert tg["[default] lstm A forward >= 1.5x Flax"] == ("1.50x", "yes")
    assert tg["[default] contended lstm A train >= 1.2x Flax"] == ("2.00x", "yes")
    assert tg["[default] contended lstm A forward >= 40% of quiet"] == ("33%", "no")
    table = report.contention_table(_fake_run())
    assert "| default | A | forward | lstm | 0.3k | 0.1k | 33% | 25% | 1.50x | 2.00x |" in table


def test_report_warns_when_the_contention_or_the_quiet_is_not_real():
    run = _fake_run()
    assert report.warnings(run) == []
    run["machine"]["loadavg_before"] = [3.0, 1, 1]  # 2 cores
    for r in run["sections"][0]["records"]:
        if r["contention"] == "busy":
            r["busy_cores_used"] = 0.2
    warn = report.warnings(run)
    assert any("load average before the run was 3.0 on 2 cores" in w for w in warn)
    assert any("in 2 of 2 contended groups" in w for w in warn)
    assert "**Caution:**" in report.markdown(run)


def test_median_of_runs_judges_contended_targets():
    from benchmarks import median

    runs = [_fake_run(jb=b) for b in (100.0, 150.0, 120.0)]  # 33%, 50%, 40% of quiet
    row = next(line for line in median.median_table(runs).splitlines()
               if "contended lstm A forward >= 40% of quiet" in line)
    assert row.endswith("| 33% | 50% | 40% | 40% | yes |")


def test_benchmarks_md_keeps_other_cpu_models(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text((Path(harness.ROOT) / "BENCHMARKS.md").read_text())
    before = md.read_text()
    amd = mdblocks.get(before, "cpu AMD EPYC")
    gpu = mdblocks.get(before, "gpu")
    assert amd is not None and "AMD EPYC" in amd and gpu is not None
    report.write_benchmarks_md(_fake_run(), md, None, tmp_path / "run.json")
    report.write_benchmarks_md(_fake_run(mode="full"), md, None, tmp_path / "run2.json")
    report.write_benchmarks_md(_fake_run(started="2026-02-02T00:00:00+00:00", jb=150.0), md,
                               None, tmp_path / "run3.json")
    text = md.read_text()
    # other models' sections and the GPU section: untouched, byte for byte
    assert mdblocks.get(text, "cpu AMD EPYC") == amd and mdblocks.get(text, "gpu") == gpu
    assert text.startswith(before.rstrip("\n"))
    # one section for the new model; the second quick run replaced the first, full kept
    key = "cpu Test CPU 9000"
    assert mdblocks.keys(text).count(key) == 1
    assert mdblocks.keys(text).count(f"{key} / quick-contended") == 1
    quick = mdblocks.get(text, f"{key} / quick-contended")
    assert "2026-02-02" in quick and "2026-01-01" not in quick and "| 50% |" in quick
    assert "run3.json" in quick
    assert "2026-01-01" in mdblocks.get(text, f"{key} / full")
    assert f"{key} / notes" in mdblocks.keys(mdblocks.get(text, key))


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
    ns = harness.argparse.Namespace(
        quick=True, tiny=False, contended=True, busy_procs=1, kernel_threads=["1", "auto"],
        configs=None, cells=None, allocators=None, skip=[], extras=False, peers=None,
        skip_peers=[], reps=3)
    jobs = [spec for spec, _ in harness.plan(ns) if spec["kind"] == "config"]
    assert sorted((j["kernel_threads"], j["config"]) for j in jobs) == [
        ("1", "A"), ("1", "B"), ("auto", "A"), ("auto", "B")]
    assert all(j["contention"] == ["quiet", "busy"] for j in jobs)
    # --smoke: the same sections, cells, peers and conditions at tiny sizes
    small = harness.plan(harness.argparse.Namespace(**{**vars(ns), "smoke": True}))
    big = harness.plan(ns)
    assert len(small) == len(big)
    for (s_spec, s_alloc), (b_spec, b_alloc) in zip(small, big, strict=True):
        assert s_alloc == b_alloc and s_spec["kind"] == b_spec["kind"]
        assert s_spec.get("contention") == b_spec.get("contention")
        assert s_spec.get("kernel_threads") == b_spec.get("kernel_threads")
        if s_spec["kind"] == "config":
            assert s_spec["config_dims"]["T"] == 8 and s_spec["cells"] == b_spec["cells"]
    # a fresh worker sees the setting in its environment and says so in its record
    res = harness._spawn({"kind": "compile", "Ts": [], "kernel_threads": "1", "ceiling_n": 64},
                         "default", False, print)
    assert res["env"].get("JAXRNN_KERNEL_THREADS") == "1"
    assert res["label"] == "default, threads=1"
    env = harness.worker_env("default", "default", {"JAXRNN_KERNEL_THREADS": "4"})
    assert "JAXRNN_KERNEL_THREADS" not in env
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
