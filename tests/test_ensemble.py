"""Many models in one compiled step: every member of an ensemble must end where the same model
trained alone ends (its own seed, its own learning rate, the same batches)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import kernels
from jaxrnn.data.batching import BatchIterator
from jaxrnn.tasks import ensemble as ensemble_cli
from jaxrnn.train import ensemble as E
from jaxrnn.train import evaluate, init_train_state, make_optimizer, make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return {"inputs": rng.normal(size=(40, 5, 3)).astype(np.float32),
            "targets": rng.integers(0, 4, 40).astype(np.int32)}


def train_alone(model, data, seed, lr, epochs, batch_size, data_seed=0, skip_nonfinite=False):
    """The reference: one model, jaxrnn.train's own step and optimiser, the ensemble's batches."""
    opt = make_optimizer(lr, clip_norm=1.0, skip_nonfinite=skip_nonfinite)
    state = init_train_state(model.init(jax.random.key(seed)), opt, seed)
    step = make_train_step(model.apply, "softmax_cross_entropy", opt)
    it = BatchIterator(data, batch_size, shuffle=True, seed=data_seed, drop_remainder=True)
    for epoch in range(epochs):
        for batch in it.epoch_batches(epoch):
            state, _ = step(state, batch)
    return state.params


@pytest.mark.slow
@pytest.mark.parametrize("path", ["kernel", "plain"])
def test_members_equal_models_trained_alone(data, path):
    model = E.ensemble_classifier(3, 4, hidden=8, path=path)
    seeds, rates = (3, 1, 7), (1e-2, 3e-3, 1e-3)
    res = E.fit_ensemble(model.init, model.apply, "softmax_cross_entropy", data, seeds=seeds,
                         learning_rates=list(rates), epochs=2, batch_size=16,
                         val_data=data, metrics=["accuracy"])
    assert res.seeds == seeds and res.learning_rates == rates
    assert [h.shape for h in res.history["loss"]] == [(3,), (3,)]
    for k, (seed, lr) in enumerate(zip(seeds, rates, strict=True)):
        alone = train_alone(model, data, seed, lr, 2, 16)
        for a, b in zip(jax.tree_util.tree_leaves(alone),
                        jax.tree_util.tree_leaves(E.member(res.params, k)), strict=True):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-5)
        # Held-out values per member are what evaluate() gives for that model.
        ev = evaluate(model.apply, E.member(res.params, k), "softmax_cross_entropy", data,
                      metrics=["accuracy"])
        np.testing.assert_allclose(res.val["loss"][k], ev["loss"], rtol=1e-5)
        np.testing.assert_allclose(res.val["accuracy"][k], ev["accuracy"], rtol=1e-6)
    acc = res.val["accuracy"]
    assert res.summary["accuracy"]["mean"] == pytest.approx(float(np.mean(acc)))
    assert res.summary["accuracy"]["std"] == pytest.approx(float(np.std(acc, ddof=1)))
    # Different seeds and rates give different members.
    w = np.asarray(res.params.head.w)
    assert not np.allclose(w[0], w[1])


def test_fit_ensemble_runs_on_the_one_loop(data, capsys):
    """fit_ensemble's epochs are the one loop's (train.run_loop, the vmapped step as its
    stepper): its epoch line shows the members' mean loss, and its non-finite guard stops a
    run in which no member has a finite loss (the old hand loop trained on through NaN)."""
    from jaxrnn.train import NonFiniteLossError

    model = E.ensemble_classifier(3, 4, hidden=8, path="plain")
    res = E.fit_ensemble(model.init, model.apply, "softmax_cross_entropy", data, seeds=(1, 2),
                         epochs=2, batch_size=16, verbose=True)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"]
    for line, losses in zip(lines, res.history["loss"], strict=True):
        assert float(line.split()[3]) == pytest.approx(float(np.mean(losses)), rel=1e-3)
    bad = {**data, "inputs": np.full_like(data["inputs"], np.nan)}
    with pytest.raises(NonFiniteLossError, match="not finite"):
        E.fit_ensemble(model.init, model.apply, "softmax_cross_entropy", bad, seeds=(1, 2),
                       epochs=1, batch_size=16)


def test_members_skip_their_nonfinite_updates(data):
    """skip_nonfinite=True (the command line's default, --skip-nonfinite): a batch holding a NaN
    example leaves every member as it was, as make_optimizer(skip_nonfinite=True) leaves one
    model trained alone; the run goes on and ends finite."""
    model = E.ensemble_classifier(3, 4, hidden=8, path="plain")
    bad = {**data, "inputs": data["inputs"].copy()}
    bad["inputs"][5, 2, 1] = np.nan
    res = E.fit_ensemble(model.init, model.apply, "softmax_cross_entropy", bad, seeds=(1, 2),
                         learning_rates=1e-2, epochs=2, batch_size=16, skip_nonfinite=True)
    for k, seed in enumerate((1, 2)):
        alone = train_alone(model, bad, seed, 1e-2, 2, 16, skip_nonfinite=True)
        for a, b in zip(jax.tree_util.tree_leaves(alone),
                        jax.tree_util.tree_leaves(E.member(res.params, k)), strict=True):
            assert np.isfinite(np.asarray(b)).all()
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-5)
    skipped = E.member(res.state.opt_state, 0).total_notfinite
    assert int(skipped) >= 1  # the NaN example's batches were skipped, not applied


@pytest.mark.parametrize("flag", [["--resume"], ["--data-parallel"]])
def test_cli_seeds_refuses_the_flags_it_does_not_honour(flag, tmp_path, capsys):
    """--resume and --data-parallel with --seeds: refused by name (the task, why) before any
    data is read, as task memory refuses --resume; not silently ignored."""
    from jaxrnn.cli import main

    assert main(["train", "--task", "digits", "--seeds", "1-2", "--epochs", "1", "--out",
                 str(tmp_path / "run"), *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"error: {flag[0]}: task digits with --seeds (the ensemble path)" in err, err


def test_kernel_and_plain_paths_agree_under_vmap(data):
    kernel = E.ensemble_classifier(3, 4, hidden=8, path="kernel")
    plain = E.ensemble_classifier(3, 4, hidden=8, path="plain")
    params = E.stack([kernel.init(jax.random.key(i)) for i in range(4)])
    x = data["inputs"][:8]

    def fwd(model):
        return jax.jit(jax.vmap(lambda p, x: model.apply(p, x), in_axes=(0, None)))

    out_k, out_p = fwd(kernel)(params, x), fwd(plain)(params, x)
    np.testing.assert_allclose(np.asarray(out_k), np.asarray(out_p), rtol=1e-5, atol=1e-6)
    for k in range(4):
        np.testing.assert_allclose(np.asarray(out_k[k]),
                                   np.asarray(plain.apply(E.member(params, k), x)),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not kernels.available(), reason="the CPU kernels are not built")
def test_vmapped_kernel_is_one_call_for_all_members(data):
    """What the docstring states: the LSTM kernel's batching rule lowers the vmapped step (forward
    and backward) to one kernel call for all 8 members, with no loop around it, as one model's
    step has one; the plain path has no kernel call at all."""
    x, y = data["inputs"][:4], data["targets"][:4]
    for path, calls in (("kernel", 1), ("plain", 0)):
        model = E.ensemble_classifier(3, 4, hidden=8, path=path)
        params = E.stack([model.init(jax.random.key(i)) for i in range(8)])

        def grad(p, x, m=model):
            return jax.grad(lambda p: -jax.nn.log_softmax(m.apply(p, x))[jnp.arange(4), y].sum())(p)

        one = jax.jit(grad).lower(E.member(params, 0), x).as_text()
        many = jax.jit(jax.vmap(grad, in_axes=(0, None))).lower(params, x).as_text()
        for target in ("jaxrnn_lstm_forward", "jaxrnn_lstm_backward"):
            assert one.count(f"custom_call @{target}(") == calls
            assert many.count(f"custom_call @{target}(") == calls
        if path == "kernel":
            assert "stablehlo.while" not in one and "stablehlo.while" not in many


def test_parse_seeds():
    assert ensemble_cli.parse_seeds("1-8") == tuple(range(1, 9))
    assert ensemble_cli.parse_seeds("0,3,7") == (0, 3, 7)
    assert ensemble_cli.parse_seeds(" 1-3, 10 ,12-13") == (1, 2, 3, 10, 12, 13)
    for bad, match in (("", "expected a list"), ("5-2", "ends before"), ("1,x", "'x'"),
                       ("1-3,2", "repeated"), ("-1", "'-1'")):
        with pytest.raises(ValueError, match=match):
            ensemble_cli.parse_seeds(bad)


def test_bad_arguments(data):
    model = E.ensemble_classifier(3, 4, hidden=8)
    with pytest.raises(ValueError, match="learning_rates: expected one per seed"):
        E.init_ensemble(model.init, [1, 2], learning_rates=[1e-3])
    with pytest.raises(ValueError, match="seeds"):
        E.init_ensemble(model.init, [])
    with pytest.raises(ValueError, match="learning_rates: expected positive"):
        E.init_ensemble(model.init, [1], learning_rates=[-1.0])
    with pytest.raises(ValueError, match="path"):
        E.ensemble_classifier(3, 4, path="fast")
    with pytest.raises(ValueError, match="split evenly"):
        E.member_mesh(list(jax.devices()) * 2, 2 * len(jax.devices()) + 1)
    with pytest.raises(TypeError, match="stacked TrainState"):
        states, opt = E.init_ensemble(model.init, [1, 2])
        E.make_ensemble_step(model.apply, "softmax_cross_entropy", opt)(states.params, data)


SHARDED = textwrap.dedent(r"""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    from jaxrnn.train import ensemble as E
    rng = np.random.default_rng(0)
    data = {"inputs": rng.normal(size=(32, 5, 3)).astype(np.float32),
            "targets": rng.integers(0, 4, 32).astype(np.int32)}
    model = E.ensemble_classifier(3, 4, hidden=8)
    out = {}
    for devices in (None, True):
        res = E.fit_ensemble(model.init, model.apply, "softmax_cross_entropy", data,
                             seeds=range(4), epochs=1, batch_size=16, devices=devices)
        out[str(devices)] = np.asarray(res.params.head.w).tolist()
        out["devices_" + str(devices)] = len(res.params.head.w.sharding.device_set)
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_members_sharded_over_devices_match():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SHARDED, ROOT], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices_None"] == 1 and out["devices_True"] == 4
    np.testing.assert_allclose(out["True"], out["None"], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_cli_seeds(capsys):
    from jaxrnn.cli import main

    assert main(["train", "--task", "digits", "--seeds", "1-3", "--epochs", "1", "--limit",
                 "120", "--hidden", "16", "--no-progress"]) == 0
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if ln.startswith("test accuracy: mean")]
    assert len(line) == 1 and "over 3 seeds" in line[0]
    per = [ln for ln in out.splitlines() if ln.startswith("test accuracy per seed")][0]
    values = [float(v.split(":")[1]) for v in per.split("seed: ")[1].split()]
    assert len(values) == 3
    assert f"mean {np.mean(values):.4f}" in line[0]
    assert main(["train", "--task", "memory", "--seeds", "1-2"]) == 2
    assert "--seeds: the ensemble path supports the tasks ['classify', 'digits', 'fashion', " \
        "'speech']" in capsys.readouterr().err


def _tiny_vowels():
    """A stand-in for the Japanese vowels data: 3 speakers, 2 features, 3-7 frames."""
    from jaxrnn.datasets.japanese_vowels import SequenceData, SequenceSplit

    rng = np.random.default_rng(3)

    def split(n):
        labels = rng.integers(0, 3, n).astype(np.int32)
        seqs = [(rng.normal(size=(int(rng.integers(3, 8)), 2)) + lab).astype(np.float32)
                for lab in labels]
        return SequenceSplit(seqs, labels)

    return SequenceData("tiny-vowels", split(40), split(12), ("a", "b", "c"))


def _classify_npz(path, n=40, seed=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.normal(size=(n, 6, 3)) + y[:, None, None]).astype(np.float32)
    np.savez(path, x=x, y=y, lengths=rng.integers(2, 7, n))
    return str(path)


def test_seeds_classify_takes_the_test_and_validation_files(tmp_path):
    """``--task classify --seeds``: the members are measured on the --test file's sequences and
    train without the --validation file's, the splits single-model classify uses (issue 28)."""
    import argparse

    from jaxrnn.tasks import classify

    args = argparse.Namespace(
        task="classify", cell="lstm", hidden=6, clip_norm=1.0, data=_classify_npz(
            tmp_path / "train.npz"), test=_classify_npz(tmp_path / "test.npz", 12, seed=5),
        validation=_classify_npz(tmp_path / "val.npz", 7, seed=6), id_column="id",
        time_column="t", label_column="label", feature_columns=None, test_fraction=None,
        val_fraction=None)
    spec = ensemble_cli.TASK_SPECS["classify"](args)
    assert len(spec["val"]["targets"]) == 12 and len(spec["train"]["targets"]) == 40
    np.testing.assert_array_equal(spec["val"]["targets"], np.load(args.test)["y"])
    single = classify.prepare(args).splits
    for split, name in (("train", "train"), ("val", "test")):
        for key in ("inputs", "targets", "lengths"):
            np.testing.assert_array_equal(spec[split][key], single[name][key])


@pytest.mark.slow
@pytest.mark.parametrize("task", ["fashion", "speech", "classify"])
def test_cli_seeds_on_other_tasks(task, tmp_path, monkeypatch, capsys):
    """``--seeds`` on the other classification tasks: the mean and spread over the members are
    printed, and each member's held-out accuracy is that of the same model trained alone
    (jaxrnn.train's own step, the ensemble's batches) and evaluated by jaxrnn.train.evaluate."""
    import argparse

    from jaxrnn.datasets import japanese_vowels

    monkeypatch.setattr(japanese_vowels, "load_japanese_vowels", _tiny_vowels)
    extra = {"fashion": dict(dataset="digits", val_size=10, limit=60),
             "speech": dict(val_fraction=0.1),
             "classify": dict(data=_classify_npz(tmp_path / "seq.npz"), id_column="id",
                              time_column="t", label_column="label", feature_columns=None,
                              test_fraction=0.3, val_fraction=0.1)}[task]
    args = argparse.Namespace(task=task, seeds="2,5", cell="lstm", hidden=6, lr=1e-2,
                              epochs=2, batch_size=16, clip_norm=1.0, layers=1,
                              bidirectional=False, progress=False, **extra)
    out = ensemble_cli.run_cli(args)
    printed = capsys.readouterr().out
    s = out["summary"]
    assert f"test accuracy: mean {s['mean']:.4f}, std {s['std']:.4f}" in printed
    assert "over 2 seeds" in printed
    spec = ensemble_cli.TASK_SPECS[task](args)
    for k, seed in enumerate((2, 5)):
        alone = train_alone(spec["model"], spec["train"], seed, 1e-2, 2, 16, data_seed=2)
        ev = evaluate(spec["model"].apply, alone, "softmax_cross_entropy", spec["val"],
                      metrics=["accuracy"])
        assert abs(out["accuracy"][k] - ev["accuracy"]) <= 1e-5
        np.testing.assert_allclose(out["loss"][k], ev["loss"], rtol=1e-5)
    assert s["mean"] == pytest.approx(float(np.mean(out["accuracy"])))

