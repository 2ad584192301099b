"""The cell registry is the one list of cells: every reader (CLI, model zoo, NNX, benchmarks,
tests) sees the same names, and every entry builds the cell and params it says it does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import CELLS, REF_STEPS, F, assert_trees_close

import jaxrnn
from jaxrnn.cells import registry

NAMES = list(registry.REGISTRY)


@pytest.mark.parametrize("name", NAMES)
def test_entry_builds_its_cell_and_params_type(name):
    entry = registry.REGISTRY[name]
    cell = entry.make_for_tests()
    assert isinstance(cell, jaxrnn.Cell)
    params = jax.eval_shape(lambda k: cell.init(k, F), jax.random.key(0))
    assert type(params) is entry.params_type
    assert cell.name == name  # the cell reports the name it is registered under


@pytest.mark.parametrize("name", registry.names(inputs="features"))
def test_width_only_construction_exposes_that_width(name):
    """``make(name, H)``, the command line's way, gives a cell whose outputs are H wide."""
    cell = registry.make(name, 7)
    params = cell.init(jax.random.key(0), F)
    _, ys = jaxrnn.run(cell, params, jnp.ones((2, 3, F)))
    assert ys.shape == (2, 3, 7)


def test_every_feature_cell_is_in_the_test_zoo_with_a_numpy_step():
    """Adding a cell to the registry without its reference equation fails here."""
    for name in registry.names(inputs="features"):
        assert name in CELLS, name
        assert name in REF_STEPS, f"{name}: add its NumPy step to tests/_reference.py"


def test_frames_cell_is_rejected_for_feature_sequences_with_a_clear_message():
    with pytest.raises(ValueError, match=r"^cell: 'convlstm' takes frames .*height, width"):
        registry.make("convlstm", 8)
    cell = registry.make("convlstm", 4, inputs="frames")
    assert cell.name == "convlstm" and cell.hidden_size == 4


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"^cell: expected one of \['lstm', .*got 'lsmt'"):
        registry.get("lsmt")


def test_readers_use_the_registry():
    from benchmarks.registry import all_cells
    from jaxrnn import cli
    from jaxrnn.train import models

    assert tuple(cli.CELL_CHOICES) == registry.names(cli=True)
    assert list(models.CELLS) == list(registry.names(cli=True))
    args = cli.build_parser().parse_args(["train", "--cell", "min_gru"])
    assert args.cell == "min_gru"
    with pytest.raises(ValueError, match="^cell: 'convlstm' takes frames"):
        models.make_cell("convlstm", 8)
    entries, notes = all_cells()
    measured = {e.name for e in entries}
    for name in registry.names():
        assert name in measured or any(repr(name) in n for n in notes), name


def test_nnx_module_by_registry_name_runs_the_functional_cell():
    pytest.importorskip("flax")
    from flax import nnx

    import jaxrnn.nnx as rnn

    module = rnn.cell_module("jordan", F, 5, 2, rngs=nnx.Rngs(0), reverse=True)
    xs = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4, F)), jnp.float32)
    want = jaxrnn.run(jaxrnn.jordan(5, 2), module.get_params(), xs, reverse=True)[1]
    assert_trees_close(module(xs), want, atol=1e-6, rtol=1e-6)


def test_import_jaxrnn_is_light():
    """``import jaxrnn`` loads cells, engine, layers and models only; training (optax, tqdm),
    the classics and the rest load on first use."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import jaxrnn, sys; heavy = ['optax', 'tqdm', 'flax', 'jaxrnn.train', "
            "'jaxrnn.classic', 'jaxrnn.seq2seq']; print([m for m in heavy if m in sys.modules]); "
            "jaxrnn.reservoir, jaxrnn.train.fit; print('optax' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["[]", "True"]
