"""The kernels' plan table (kernels/tuner.h, kernels/tune.py): every candidate a shape class
tries gives the one-thread values bit for bit, the table settles on a plan it measured, the
cache file round-trips, JAXRNN_KERNEL_TUNE=0 keeps the rules, and the plans command says why."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import kernels
from jaxrnn.kernels import __main__ as kernels_main
from jaxrnn.kernels import tune

pytestmark = [
    pytest.mark.skipif(kernels._compiler() is None, reason="no C++ compiler"),
    pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: there is nothing to tune"),
]

# Large enough to be tuned (plan.h: kTuneMinCallWork), small enough to be quick: the row split
# needs a row per thread, the unit split two chunks of 16 units.
B, T, F, H = 8, 48, 8, 64


@pytest.fixture
def fresh_plans(monkeypatch):
    monkeypatch.delenv("JAXRNN_KERNEL_THREADS", raising=False)
    monkeypatch.setenv("JAXRNN_KERNEL_TUNE", "quiet")
    assert kernels.available()
    kernels.reset_plans()
    yield
    kernels.reset_plans()


def _job(name, seed=0):
    cell = getattr(jaxrnn, name)(H)
    p = cell.init(jax.random.key(seed), F)
    xs = jax.random.normal(jax.random.key(seed + 1), (B, T, F))

    def loss(p, xs):
        return jnp.sum(jnp.sin(jaxrnn.run(cell, p, xs)[1]))

    return jax.jit(jax.value_and_grad(loss)), p, xs


def _leaves(out):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(out)]


def _forward(name):
    return next(e for e in kernels.plans() if e["kernel"] == f"{name}_forward")


@pytest.mark.parametrize("name", ["lstm", "gru", "elman"])
def test_every_candidate_plan_gives_the_one_thread_values(monkeypatch, fresh_plans, name):
    fn, p, xs = _job(name)
    monkeypatch.setenv("JAXRNN_KERNEL_TUNE", "0")
    monkeypatch.setenv("JAXRNN_KERNEL_THREADS", "1")
    want = _leaves(fn(p, xs))
    assert kernels.plans() == []  # neither a fixed team nor TUNE=0 touches the table
    monkeypatch.delenv("JAXRNN_KERNEL_THREADS")
    monkeypatch.setenv("JAXRNN_KERNEL_TUNE", "quiet")
    calls = 0
    while calls < 64 and any(e["state"] == "tuning" for e in kernels.plans()) or calls == 0:
        for got, ref in zip(_leaves(fn(p, xs)), want):
            np.testing.assert_array_equal(got, ref)  # bit for bit, whichever plan ran
        calls += 1
    entries = kernels.plans()
    assert {e["kernel"] for e in entries} == {f"{name}_forward", f"{name}_backward"}
    for e in entries:
        assert e["state"] == "measured"
        tried = {(t["threads"], t["rows"]) for t in e["tried"]}
        # one thread, and two threads by units and by rows, each timed kTuneSamples times
        assert {(1, False), (2, False), (2, True)} <= tried
        assert all(t["samples"] >= 3 and t["ms"] > 0 for t in e["tried"])
        best = min(t["ms"] for t in e["tried"])
        kept = next(t for t in e["tried"] if (t["threads"], t["rows"]) ==
                    (e["plan"]["threads"], e["plan"]["rows"]))
        rules = e["tried"][0]  # the rules' plan is the first candidate and wins ties (5%)
        assert (rules["threads"], rules["rows"]) == (e["rule"]["threads"], e["rule"]["rows"])
        assert kept["ms"] == best or (kept is rules and rules["ms"] <= 1.05 * best)
    # settled: the calls after tuning run the kept plan, and still give the same values
    for got, ref in zip(_leaves(fn(p, xs)), want):
        np.testing.assert_array_equal(got, ref)


def test_small_calls_are_not_tuned(fresh_plans):
    cell = jaxrnn.lstm(8)
    p = cell.init(jax.random.key(0), 4)
    jax.block_until_ready(jaxrnn.run(cell, p, jnp.ones((2, 3, 4)))[1])
    assert kernels.plans() == []


def test_warm_up_leaves_the_shape_class_tuned(fresh_plans):
    fn, p, xs = _job("elman")
    calls = tune.warm_up(fn, p, xs)
    entries = kernels.plans()
    assert entries and all(e["state"] == "measured" for e in entries)
    n = max(len(e["tried"]) for e in entries)
    assert 1 + 3 * n <= calls <= 2 + 3 * n  # a warm-up call, the samples, one call to see it
    assert tune.warm_up(fn, p, xs) == 1  # nothing left to tune


def test_the_cache_file_round_trips_and_its_plan_is_used(fresh_plans, tmp_path):
    fn, p, xs = _job("gru")
    tune.warm_up(fn, p, xs)
    measured = {tune._key(e): e["plan"] for e in kernels.plans()}
    lib = kernels._state["lib"]
    path = tmp_path / "lib.plans.json"
    assert tune.save(lib, path) == len(measured)
    kernels.reset_plans()
    assert tune.preload(lib, path) == len(measured)
    cached = kernels.plans()
    assert {tune._key(e): e["plan"] for e in cached} == measured
    assert all(e["state"] == "cached" for e in cached)
    jax.block_until_ready(fn(p, xs))
    assert all(e["state"] == "cached" and e["calls"] == 0 for e in kernels.plans())
    # a second process's plans merge into the file instead of replacing it
    data = json.loads(path.read_text())
    other = dict(data["plans"][0], B=999)
    data["plans"].append(other)
    path.write_text(json.dumps(data))
    kernels.reset_plans()
    tune.warm_up(fn, p, xs)
    tune.save(lib, path)
    assert 999 in {q["B"] for q in tune.read_cache(path)}


@pytest.mark.parametrize("text", ["", "not json", '{"format": 99, "plans": []}',
                                  '{"format": 1, "plans": [{"kernel": "nope"}, 3]}',
                                  '{"format": 1, "plans": [{"kernel": "lstm_forward", "variant": 0,'
                                  ' "B": 8, "H": 64, "F": 8, "log2_T": 5, "max_threads": 2,'
                                  ' "plan": {"threads": 5, "rows": true}}]}'])
def test_a_bad_cache_file_is_ignored(fresh_plans, tmp_path, text):
    path = tmp_path / "lib.plans.json"
    path.write_text(text)
    assert tune.preload(kernels._state["lib"], path) == 0  # 5 threads > max_threads: refused
    assert kernels.plans() == []


def test_the_plans_command_prints_each_class_and_why(fresh_plans, tmp_path, monkeypatch,
                                                     capsys):
    fn, p, xs = _job("lstm")
    tune.warm_up(fn, p, xs)
    path = tmp_path / "lib.plans.json"
    tune.save(kernels._state["lib"], path)
    monkeypatch.setattr(tune, "cache_path", lambda library: path)
    assert kernels_main.main(["plans"]) == 0
    out = capsys.readouterr().out
    assert str(path) in out
    lines = [line for line in out.splitlines() if line.startswith("  lstm_")]
    assert len(lines) == 2 and all("fastest of: 1 thread" in line for line in lines)
    assert "lstm_forward (training) B=8 H=64 F=8 T~2^5 (2 threads at most)" in out \
        or f"({os.cpu_count()} threads at most)" in out
    assert kernels_main.main(["plans", "--reset"]) == 0
    assert not path.exists()
    kernels_main.main(["plans"])
    assert "none yet" in capsys.readouterr().out
