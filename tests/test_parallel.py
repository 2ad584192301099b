"""Data parallelism: a training run sharded over 8 simulated CPU devices must give the same
losses and parameters as the single-device run (float tolerance).

XLA_FLAGS must be set before JAX initialises, so the 8-device run happens in a subprocess."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxrnn import parallel

WORKER = textwrap.dedent(
    r"""
    import json, os
    import jax, jax.numpy as jnp, numpy as np, optax
    import jaxrnn
    from jaxrnn import parallel
    from jaxrnn.train import fit

    out = {"device_count": jax.device_count()}
    cell, readout = jaxrnn.gru(8), jaxrnn.dense(1)
    stack = jaxrnn.stacked([cell])

    def apply(params, inputs, *, lengths=None, key=None, deterministic=True):
        ys = stack.apply(params[0], inputs, lengths=lengths)
        return readout.apply(params[1], jaxrnn.last_valid(ys, lengths))[..., 0]

    def dataset(seed, n, T=10):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, T, 3)).astype(np.float32)
        lengths = rng.integers(2, T + 1, n).astype(np.int32)
        y = (x[..., 0] * (np.arange(T) < lengths[:, None])).sum(1) / lengths
        return {"inputs": x, "lengths": lengths, "targets": y.astype(np.float32)}

    train, val = dataset(0, 64), dataset(1, 60)  # 60 % 16 = 12: a last batch not divisible by 8
    k1, k2 = jax.random.split(jax.random.key(0))
    params = (stack.init(k1, 3), readout.init(k2, 8))

    mesh = parallel.make_mesh(8)
    sharded = parallel.shard_batch({k: v[:16] for k, v in train.items()}, mesh)
    x = sharded["inputs"]
    out["batch_devices"] = len(x.sharding.device_set)
    out["shard_shapes"] = sorted({tuple(s.data.shape) for s in x.addressable_shards})
    try:
        parallel.shard_batch({"inputs": train["inputs"][:6]}, mesh)
        out["indivisible_error"] = None
    except ValueError as e:
        out["indivisible_error"] = str(e)

    # the whole loop, with validation (its ragged last batch runs replicated)
    kw = dict(epochs=3, batch_size=16, val_data=val, progress=False, verbose=False)
    r1 = fit(apply, params, "mse", optax.adam(1e-2), train, **kw)
    r8 = fit(apply, params, "mse", optax.adam(1e-2), train, data_parallel=True, **kw)
    out["fit_history_1"] = {k: r1.history[k] for k in ("loss", "val_loss")}
    out["fit_history_8"] = {k: r8.history[k] for k in ("loss", "val_loss")}
    out["fit_param_diff"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree_util.tree_leaves(r1.params), jax.tree_util.tree_leaves(r8.params)))
    out["params_replicated"] = all(
        a.sharding.is_fully_replicated and len(a.sharding.device_set) == 8
        for a in jax.tree_util.tree_leaves(r8.state.params))
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def eight_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_batch_is_split_over_devices(eight_devices):
    r = eight_devices
    assert r["batch_devices"] == 8
    assert r["shard_shapes"] == [[2, 10, 3]]  # 16 examples / 8 devices
    assert "divide evenly over 8" in r["indivisible_error"]


def test_fit_data_parallel_equals_single_device(eight_devices):
    r = eight_devices
    assert r["device_count"] == 8
    assert r["params_replicated"]
    for k in ("loss", "val_loss"):
        np.testing.assert_allclose(r["fit_history_8"][k], r["fit_history_1"][k],
                                   rtol=1e-5, atol=1e-6)
    assert r["fit_history_1"]["loss"][-1] < r["fit_history_1"]["loss"][0]  # it did train
    assert r["fit_param_diff"] < 1e-5


def test_bad_input():
    with pytest.raises(ValueError, match="num_devices"):
        parallel.make_mesh(jax.device_count() + 1)
    with pytest.raises(ValueError, match="num_devices"):
        parallel.make_mesh(0)
    with pytest.raises(TypeError, match="data_parallel"):
        parallel.resolve_mesh("all")
    with pytest.raises(TypeError, match="mesh"):
        parallel.data_parallel_jit(lambda s, b: s, mesh="batch")
    mesh = parallel.make_mesh(1)
    with pytest.raises(ValueError, match="batch"):
        parallel.shard_batch({"inputs": np.float32(1.0)}, mesh)  # no batch axis
    assert parallel.resolve_mesh(False) is None and parallel.resolve_mesh(None) is None


def test_cli_flag_parses():
    from jaxrnn.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train"]).data_parallel is None
    assert parser.parse_args(["train", "--data-parallel"]).data_parallel == 0  # all devices
    assert parser.parse_args(["train", "--data-parallel", "4"]).data_parallel == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data-parallel", "-1"])


def test_the_cli_passes_the_mesh_and_nothing_is_left_behind():
    """``--data-parallel`` becomes the mesh on ``args`` that a task passes to ``fit``; no mesh is
    kept anywhere else, so a later ``compile_step`` without ``data_parallel`` is one device."""
    from jax.sharding import Mesh

    from jaxrnn import cli
    from jaxrnn.train.step import compile_step

    args = cli.build_parser().parse_args(["train", "--data-parallel"])
    with cli._processes(args):
        assert isinstance(args.data_parallel, Mesh)
        assert args.data_parallel.devices.size == jax.device_count()
        assert parallel.resolve_mesh(None) is None  # no default mesh inside the block either
        assert not hasattr(compile_step(lambda s, b: s), "mesh")  # a plain jit
    args = cli.build_parser().parse_args(["train"])
    with cli._processes(args):
        assert args.data_parallel is None
