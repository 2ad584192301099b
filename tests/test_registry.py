"""The cell registry is the one list of cells: every reader (CLI, model zoo, NNX, benchmarks,
tests) sees the same names, and every entry builds the cell and params it says it does."""

import ast

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
    for name in registry.variants():
        assert name in CELLS, name
        assert name in REF_STEPS, f"{name}: add its NumPy step ref_NAME to tests/_reference.py"


def test_every_registered_cell_is_exported():
    """``jaxrnn.NAME`` is each registered factory, with its params and state types, all in
    ``jaxrnn.__all__``; each entry with a class name has its NNX module and model shortcut."""
    pytest.importorskip("flax")
    import jaxrnn.nnx as rnn

    for entry in registry.REGISTRY.values():
        for path in (entry.factory_path, entry.params_path, entry.state_path):
            attr = path.partition(":")[2]
            assert attr in jaxrnn.__all__, attr
            assert getattr(jaxrnn, attr) is registry.resolve(path), attr
        if entry.class_name:
            assert getattr(rnn, entry.class_name).registry_name == entry.name
            assert entry.class_name in rnn.__all__
            if entry.inputs == "features":
                assert getattr(jaxrnn.models, entry.class_name)(3).cell == entry.name
                assert entry.class_name in jaxrnn.models.__all__
    assert jaxrnn.mgu is registry.get("mgu").factory


@pytest.mark.parametrize("name", list(registry.variants(inputs=None)))
def test_backend_fields_say_what_computes_the_cell(name):
    """The registry's ``kernel``, ``fused`` and ``parallel`` fields (from which test_engine
    expects each backend to claim a cell or refuse it) agree with the cells and backends."""
    from jaxrnn import kernels
    from jaxrnn.engine.backends import associative, cpu_kernels

    entry, _ = registry.variants(inputs=None)[name]
    cell = registry.make_variant(name)
    backends = registry.backends_of(name)
    assert "scan" in backends and backends <= entry.backends
    has_product = cell.parts is not None and cell.parts.recurrent_product is not None
    assert entry.fused == has_product, name
    assert (entry.kernel is not None) == (cell.name in cpu_kernels.ADAPTERS), name
    if entry.kernel is not None:
        assert f"jaxrnn_{entry.kernel}_forward" in kernels.TARGETS, entry.kernel
    assert entry.parallel == (cell.name in associative.LOG_COEFFICIENTS), name


@pytest.mark.parametrize("name", list(registry.REGISTRY))
def test_test_kwargs_begin_with_the_sizes_make_for_tests_resizes(name):
    """``test_kwargs`` name the factory's positional sizes first (the hidden width, then the
    output width of a ``hidden_output`` cell), so ``make_for_tests(hidden=, output=)`` resizes
    exactly those."""
    import inspect

    entry = registry.get(name)
    n = 1 if entry.sizes == "hidden" else 2
    positional = list(inspect.signature(entry.factory).parameters)[:n]
    assert list(entry.test_kwargs)[:n] == positional, name
    small = entry.make_for_tests()
    big = entry.make_for_tests(hidden=7, output=2)
    assert big.hidden_size == 7 and small.hidden_size == entry.test_kwargs[positional[0]]
    if n == 2:
        assert big.output_size == 2


def test_each_peer_family_has_one_reference_cell():
    """The peer libraries' families (Flax, PyTorch, Keras: LSTM, GRU, simple RNN; the Jordan
    net written as a Flax cell), each with the one registered cell computing its equations."""
    refs = registry.peer_references()
    assert set(refs) == {"lstm", "gru", "rnn", "jordan"}
    assert {e.peer for e in registry.REGISTRY.values() if e.peer} == set(refs)
    assert sum(e.peer_reference for e in registry.REGISTRY.values()) == len(refs)
    for family, entry in refs.items():
        assert entry.peer == family and entry.kernel is not None


def test_frames_cell_is_rejected_for_feature_sequences_with_a_clear_message():
    with pytest.raises(ValueError, match=r"^cell: 'convlstm' takes frames .*height, width"):
        registry.make("convlstm", 8)
    cell = registry.make("convlstm", 4, inputs="frames")
    assert cell.name == "convlstm" and cell.hidden_size == 4


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"^cell: expected one of \['lstm', .*got 'lsmt'"):
        registry.get("lsmt")


# Files that still hold a list of cells of their own, each for a reason; any other literal list of
# four or more registered names fails test_no_hand_kept_list_of_cells. ``path: why``.
KEPT_LISTS = {
    # the kernel backend's glue: one adapter (code) per cell, checked against the registry's
    # ``kernel`` field by test_backend_fields_say_what_computes_the_cell
    "jaxrnn/engine/backends/cpu_kernels.py": "one adapter per kernel cell",
}


def _registered_names_in(node, names) -> set[str]:
    """The registered names ``node`` mentions: as a string, an attribute or a variable."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and sub.value in names:
            found.add(sub.value)
        elif isinstance(sub, ast.Attribute) and sub.attr in names:
            found.add(sub.attr)
        elif isinstance(sub, ast.Name) and sub.id in names:
            found.add(sub.id)
    return found


def _head(node):
    """What names an element of a literal: a tuple's first item, a call's callee and first
    argument, otherwise the element itself."""
    if isinstance(node, ast.Tuple) and node.elts:
        return node.elts[0]
    return node


def hand_kept_lists(source: str, names) -> list[tuple[int, list[str]]]:
    """``(line, names)`` of each literal list, tuple, set or dict (keys, or values when the
    keys name nothing) whose elements name four or more registered cells, and of each run of
    consecutive statements naming one each (``lstm = ...; gru = ...``)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            groups = [[_head(e) for e in node.elts]]
        elif isinstance(node, ast.Dict):
            groups = [[k for k in node.keys if k is not None], [_head(v) for v in node.values]]
        else:
            groups = []
        for group in groups:
            found = set().union(*(_registered_names_in(e, names) for e in group))
            if len(found) >= 4:
                out.append((node.lineno, sorted(found)))
        for body in (getattr(node, f, None) for f in ("body", "orelse")):
            if not isinstance(body, list):
                continue
            run: set[str] = set()
            for stmt in body:
                one = _registered_names_in(stmt, names) if isinstance(
                    stmt, (ast.Assign, ast.AnnAssign, ast.Expr)) else set()
                run = run | one if len(one) == 1 and not one <= run else set()
                if len(run) >= 4:
                    out.append((stmt.lineno, sorted(run)))
                    run = set()
    return out


def test_the_hand_kept_list_detector_finds_lists():
    names = set(registry.REGISTRY)
    a, b, c, d = list(registry.REGISTRY)[:4]
    assert hand_kept_lists(f"X = [{a!r}, {b!r}, {c!r}, {d!r}]", names) == [
        (1, sorted([a, b, c, d]))]
    zoo = f"Z = {{'x': (jaxrnn.{a}(4), 1), 'y': ({b}(4),), 'z': ({c},), 'w': ({d}(1),)}}"
    assert [n for _, n in hand_kept_lists(zoo, names)] == [sorted([a, b, c, d])]
    statements = "\n".join(f"{n} = registry.get({n!r}).factory" for n in (a, b, c, d))
    assert hand_kept_lists(statements, names)
    assert not hand_kept_lists(f"X = [{a!r}, {b!r}, {c!r}]", names)
    assert not hand_kept_lists("X = [n for n in registry.names()]", names)


def test_no_hand_kept_list_of_cells():
    """The registry is the only list of cells: no literal list of four or more registered
    names in the package, the benchmarks or the tests (outside :data:`KEPT_LISTS`)."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent
    names = set(registry.REGISTRY)
    found = {}
    for folder in ("jaxrnn", "benchmarks", "tests"):
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel == "jaxrnn/cells/registry.py" or rel in KEPT_LISTS:
                continue
            hits = hand_kept_lists(path.read_text(), names)
            if hits:
                found[rel] = hits
    assert not found, f"lists of cells outside the registry: {found}"


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
    code = ("import jaxrnn, sys; heavy = ['optax', 'tqdm', 'flax', 'jaxrnn.train.loop', "
            "'jaxrnn.classic', 'jaxrnn.seq2seq']; print([m for m in heavy if m in sys.modules]); "
            "jaxrnn.reservoir, jaxrnn.train.fit; print('optax' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["[]", "True"]
