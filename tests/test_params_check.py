"""Params are checked against their cell before anything runs (issue 15, point 2).

Running a cell with params of another family, another size, a dict or ``None`` must raise one
clear error naming ``params`` with the expected and received structure or shapes, instead of
an error from inside JAX or (on the kernel path) values read past the end of a buffer.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import pytest

import jaxrnn
from jaxrnn.classic import reservoir

F = 3

# name -> (cell, input size its params are made for, xs for that cell); every family, each at
# two sizes (or two configurations) that give different params.
_DENSE = jnp.ones((2, 5, F))
ZOO = {
    "lstm4": (jaxrnn.lstm(4), F, _DENSE),
    "lstm6": (jaxrnn.lstm(6), F, _DENSE),
    "lstm4_peephole": (jaxrnn.lstm(4, peephole=True), F, _DENSE),
    "gru4": (jaxrnn.gru(4), F, _DENSE),
    "gru8": (jaxrnn.gru(8), F, _DENSE),
    "gru4_cho": (jaxrnn.gru(4, reset_after=False), F, _DENSE),
    "elman4": (jaxrnn.elman(4), F, _DENSE),
    "elman6": (jaxrnn.elman(6), F, _DENSE),
    "elman4_readout": (jaxrnn.elman(4, output_size=2), F, _DENSE),
    "jordan4_2": (jaxrnn.jordan(4, 2), F, _DENSE),
    "jordan4_3": (jaxrnn.jordan(4, 3), F, _DENSE),
    "fully_recurrent4": (jaxrnn.fully_recurrent(4, 2), F, _DENSE),
    "fully_recurrent6": (jaxrnn.fully_recurrent(6, 2), F, _DENSE),
    "min_gru4": (jaxrnn.min_gru(4), F, _DENSE),
    "min_gru6": (jaxrnn.min_gru(6), F, _DENSE),
    "min_lstm4": (jaxrnn.min_lstm(4), F, _DENSE),
    "reservoir4": (reservoir(4, density=0.5), F, _DENSE),
    "reservoir6": (reservoir(6, density=0.5), F, _DENSE),
    "reservoir4_feedback": (reservoir(4, density=0.5, feedback_size=2), F, jnp.ones((2, 5, F + 2))),
    "convlstm4": (jaxrnn.convlstm(4, kernel_size=3), F, jnp.ones((2, 3, 3, 5, F))),
    "convlstm4_k1": (jaxrnn.convlstm(4, kernel_size=1), F, jnp.ones((2, 3, 3, 5, F))),
}
_PARAMS = {name: cell.init(jax.random.key(0), size) for name, (cell, size, _) in ZOO.items()}
PAIRS = [(a, b) for a, b in itertools.permutations(ZOO, 2)]


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


def test_every_cell_accepts_its_own_params():
    for name, (cell, _, xs) in ZOO.items():
        _, ys = jaxrnn.run(cell, _PARAMS[name], xs)
        assert ys.shape[-1] == cell.output_size, name


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{a}-with-{b}" for a, b in PAIRS])
def test_params_of_another_cell_are_refused(a, b):
    """Cell ``a`` run with the params of ``b`` (another family, size or configuration) raises one
    error naming ``params`` and cell ``a``, before any step is traced."""
    cell, _, xs = ZOO[a]
    counted, calls = _counting(cell)
    with pytest.raises((TypeError, ValueError), match=r"^params: expected ") as err:
        jaxrnn.run(counted, _PARAMS[b], xs)
    assert f"cell {cell.name!r}" in str(err.value)
    assert calls == []
    # the same error under jit, and from the associative backend's front door
    with pytest.raises((TypeError, ValueError), match=r"^params: expected "):
        jax.jit(lambda p: jaxrnn.run(cell, p, xs))(_PARAMS[b])
    if cell.name in ("min_gru", "min_lstm"):
        with pytest.raises((TypeError, ValueError), match=r"^params: expected "):
            jaxrnn.parallel_run(cell, _PARAMS[b], xs)


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("bad", [None, {"w_x": jnp.ones((F, 4))}, (), jnp.ones((F, 4))],
                         ids=["none", "dict", "empty_tuple", "array"])
def test_params_that_are_not_params_are_refused(name, bad):
    cell, _, xs = ZOO[name]
    with pytest.raises(TypeError, match=r"^params: expected \w+\(.*\) for cell ") as err:
        jaxrnn.run(cell, bad, xs)
    assert "got " in str(err.value)


def test_the_kernel_case_of_the_issue():
    """``gru(8)`` with ``gru(64)`` params read a (B, 64) state from a (B, 8) buffer: now a
    ValueError with the expected and received shapes."""
    big = jaxrnn.gru(64).init(jax.random.key(0), F)
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
        jaxrnn.run(plain, peep.init(jax.random.key(0), F), _DENSE)


def test_wrapped_cells_are_checked():
    cell = jaxrnn.with_recurrent_mask(jaxrnn.gru(8), jnp.ones((8,)))
    with pytest.raises(ValueError, match="^params: expected GRUParams"):
        jaxrnn.run(cell, jaxrnn.gru(4).init(jax.random.key(0), F), _DENSE)


def test_params_may_be_cast():
    """Dtypes are not part of the check (mixed precision keeps params in bfloat16)."""
    cell = jaxrnn.gru(4)
    p16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), cell.init(jax.random.key(0), F))
    _, ys = jaxrnn.run(cell, p16, _DENSE.astype(jnp.bfloat16))
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
    p = cell.init(jax.random.key(0), F)
    for xs in (jnp.ones((2, 5, F)), jnp.ones((3, 4, F)), jnp.ones((5, F))):
        jaxrnn.run(counted, p, xs)
    jax.jit(lambda p: jaxrnn.run(counted, p, jnp.ones((2, 5, F))))(p)
    assert calls == [F]
