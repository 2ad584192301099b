"""Params are checked against their cell before anything runs (issue 15, point 2).

Running a cell with params of another family, another size, another configuration, a dict or
``None`` must raise one clear error naming ``params`` with the expected and received structure
or shapes, instead of an error from inside JAX or (on the kernel path) values read past the end
of a buffer.

The check (``engine/validate.check_params``) has three branches: the cell cannot read an input
size from the params (not params, or another family's), the tree structure differs (another
family, a ``None`` field), a leaf shape differs (another size). Each registered cell and test
variant (the registry) meets each kind of mismatch once: another family's params, its own
family at another size, and each other configuration of its family; under ``jit`` and through
``parallel_run`` one case per kind.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn.cells import registry

F = 3
_DENSE = jnp.ones((2, 5, F))
_FRAMES = jnp.ones((2, 3, 3, 5, F))  # (B, height, width, T, channels)

# name -> (registry entry, cell): every registered cell and test variant at its test size, and
# the configurations the registry has no variant for (a reservoir fed back its output: its
# params hold more input rows than its init is given; ConvLSTM with a 1x1 kernel)
ZOO = {name: (entry, registry.make_variant(name))
       for name, (entry, _) in registry.variants(inputs=None).items()}
ZOO["reservoir_feedback"] = (registry.get("reservoir"),
                             registry.make_variant("reservoir", feedback_size=2))
ZOO["convlstm_k1"] = (registry.get("convlstm"), registry.make_variant("convlstm", kernel_size=1))


def _xs(name):
    entry, cell = ZOO[name]
    if entry.inputs == "frames":
        return _FRAMES
    return jnp.ones((2, 5, F + int(cell.options.get("extra_inputs", 0))))


def _params(cell):
    """Params of the cell's structure and shapes (zeros: the check reads shapes only, and
    nothing here compiles an init)."""
    shapes = jax.eval_shape(lambda k: cell.init(k, F), jax.random.key(0))
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _shapes(cell):
    p = _params(cell)
    return jax.tree_util.tree_structure(p), [a.shape for a in jax.tree_util.tree_leaves(p)]


def _other_family(name):
    """The next registered entry (cyclically) whose params are of another type."""
    entries = list(registry.REGISTRY.values())
    entry = ZOO[name][0]
    i = entries.index(entry)
    for other in entries[i + 1:] + entries[:i]:
        if other.params_path != entry.params_path:
            return other.make_for_tests()
    raise AssertionError("one family only")


def _other_size(name):
    """The same construction with its first size (hidden units, channels) two larger."""
    entry, cell = ZOO[name]
    size_key = next(iter(entry.test_kwargs))
    variant = registry.variants(inputs=None).get(name, (entry, None))[1]
    options = {} if variant is None else dict(variant.options)
    if name == "reservoir_feedback":
        options["feedback_size"] = 2
    if name == "convlstm_k1":
        options["kernel_size"] = 1
    return entry.make_for_tests(**options, **{size_key: entry.test_kwargs[size_key] + 2})


# pairs of one family (same params type) whose params differ: another configuration
CONFIG_PAIRS = [
    (a, b) for a, b in itertools.permutations(ZOO, 2)
    if ZOO[a][0].params_path == ZOO[b][0].params_path and _shapes(ZOO[a][1]) != _shapes(ZOO[b][1])
]


def _counting(cell):
    """The same cell, counting calls of its step and project (nothing may be traced)."""
    calls = []

    def step(p, c, x):
        calls.append("step")
        return cell.step(p, c, x)

    def project(p, x):
        calls.append("project")
        return cell.project(p, x)

    return cell._replace(step=step, project=project), calls


def _assert_refused(name, params, errors=(TypeError, ValueError)):
    """Cell ``name`` run with ``params`` raises one error naming ``params`` and the cell, before
    any step is traced."""
    cell = ZOO[name][1]
    counted, calls = _counting(cell)
    with pytest.raises(errors, match=r"^params: expected ") as err:
        jaxrnn.run(counted, params, _xs(name))
    assert f"cell {cell.name!r}" in str(err.value)
    assert calls == []
    return str(err.value)


def test_every_cell_accepts_its_own_params():
    """(Traced, not compiled: the check runs before tracing; the values are tested elsewhere.)"""
    for name, (_, cell) in ZOO.items():
        _, ys = jax.eval_shape(lambda p, cell=cell, name=name: jaxrnn.run(cell, p, _xs(name)),
                               _params(cell))
        assert ys.shape[-1] == cell.output_size, name


@pytest.mark.parametrize("name", list(ZOO))
def test_params_of_another_family_are_refused(name):
    """Another family's params: its input size cannot be read, or the structure differs."""
    _assert_refused(name, _params(_other_family(name)), errors=TypeError)


@pytest.mark.parametrize("name", list(ZOO))
def test_params_of_another_size_are_refused(name):
    """The family's own params at another size: a ValueError with both shapes."""
    msg = _assert_refused(name, _params(_other_size(name)), errors=ValueError)
    assert "got " in msg


@pytest.mark.parametrize("a,b", CONFIG_PAIRS, ids=[f"{a}-with-{b}" for a, b in CONFIG_PAIRS])
def test_params_of_another_configuration_are_refused(a, b):
    """Cell ``a`` with the params of ``b``, another configuration of the same family (a None
    field set or unset, another kernel size, more input rows)."""
    _assert_refused(a, _params(ZOO[b][1]))


@pytest.mark.parametrize("bad", [None, {"w_x": jnp.ones((F, 4))}, (), jnp.ones((F, 4))],
                         ids=["none", "dict", "empty_tuple", "array"])
def test_params_that_are_not_params_are_refused(bad):
    for name, (_, cell) in ZOO.items():
        with pytest.raises(TypeError, match=r"^params: expected \w+\(.*\) for cell ") as err:
            jaxrnn.run(cell, bad, _xs(name))
        assert "got " in str(err.value), name


def test_each_kind_of_mismatch_is_refused_under_jit_and_by_parallel_run():
    """Under ``jit`` (the params are tracers: only their shapes are known) one case per kind;
    ``parallel_run`` (the associative backend's front door) checks as ``run`` does."""
    cases = {"another family": ("gru", _params(_other_family("gru"))),
             "another size": ("gru", _params(_other_size("gru"))),
             "another configuration": ("lstm", _params(ZOO["lstm_peephole"][1]))}
    for name, params in cases.values():
        cell = ZOO[name][1]
        with pytest.raises((TypeError, ValueError), match=r"^params: expected "):
            jax.jit(lambda p, cell=cell, name=name: jaxrnn.run(cell, p, _xs(name)))(params)
    for name in registry.REGISTRY:
        if not registry.get(name).parallel:
            continue
        cell = ZOO[name][1]
        for params in (_params(_other_family(name)), _params(_other_size(name)), None):
            with pytest.raises((TypeError, ValueError), match=r"^params: expected "):
                jaxrnn.parallel_run(cell, params, _xs(name))


def test_the_kernel_case_of_the_issue():
    """``gru(8)`` with ``gru(64)`` params read a (B, 64) state from a (B, 8) buffer: now a
    ValueError with the expected and received shapes."""
    big = _params(jaxrnn.gru(64))
    with pytest.raises(ValueError) as err:
        jaxrnn.run(jaxrnn.gru(8), big, jnp.ones((2, 5, F)))
    msg = str(err.value)
    assert msg.startswith("params: expected GRUParams for cell 'gru' (hidden 8): ")
    assert "w_h (8, 24)" in msg and "got " in msg and "w_h (64, 192)" in msg


def test_none_field_must_match():
    """An LSTM without peepholes given peephole weights (and the reverse) is refused: the
    kernel would ignore them and the scan would use them."""
    plain, peep = jaxrnn.lstm(4), jaxrnn.lstm(4, peephole=True)
    with pytest.raises(TypeError, match=r"expected LSTMParams\(w_x, w_h, b\) .* got "
                                        r"LSTMParams\(w_x, w_h, b, peephole\)"):
        jaxrnn.run(plain, _params(peep), _DENSE)


def test_wrapped_cells_are_checked():
    cell = jaxrnn.with_recurrent_mask(jaxrnn.gru(8), jnp.ones((8,)))
    with pytest.raises(ValueError, match="^params: expected GRUParams"):
        jaxrnn.run(cell, _params(jaxrnn.gru(4)), _DENSE)


def test_params_may_be_cast():
    """Dtypes are not part of the check (mixed precision keeps params in bfloat16)."""
    cell = jaxrnn.gru(4)
    p16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), _params(cell))
    _, ys = jax.eval_shape(lambda p: jaxrnn.run(cell, p, _DENSE.astype(jnp.bfloat16)), p16)
    assert ys.shape == (2, 5, 4)


def test_init_is_traced_once_per_cell_and_size():
    """The expected params come from ``jax.eval_shape(init)``, cached: new batch shapes and new
    traces of the same cell do not trace init again."""
    cell = jaxrnn.gru(4)
    calls = []

    def init(key, size):
        calls.append(size)
        return cell.init(key, size)

    counted = cell._replace(init=init)
    p = _params(cell)
    for xs in (jnp.ones((2, 5, F)), jnp.ones((3, 4, F)), jnp.ones((5, F))):
        jax.eval_shape(lambda p, xs=xs: jaxrnn.run(counted, p, xs), p)
    jax.jit(lambda p: jaxrnn.run(counted, p, jnp.ones((2, 5, F)))).lower(p)
    assert calls == [F]
