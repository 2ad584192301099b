"""Recursive (tree) networks against a NumPy recursive evaluation, padding invariance,
finite-difference gradients and bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxrnn.classic import recursive as rn

TREES = [((0, 1), 2), 3, (((1, 1), (2, 0)), (3, (0, 2))), (0, (1, (2, 3)))]


def np_eval(tree, p):
    """The composition written out recursively over the nested tree, in float64."""
    if isinstance(tree, int):
        return np.asarray(p.embed, np.float64)[tree]
    left, right = np_eval(tree[0], p), np_eval(tree[1], p)
    return np.tanh(np.r_[left, right] @ np.asarray(p.w, np.float64) + np.asarray(p.b, np.float64))


def _params(H=6, V=4, seed=0):
    net = rn.recursive_net(H, V)
    p = net.init(jax.random.key(seed))
    p = p._replace(b=jax.random.normal(jax.random.key(seed + 1), (H,)) * 0.3)
    return net, p


def test_matches_numpy_recursive_evaluation():
    net, p = _params()
    trees = rn.pack_trees(TREES)
    roots, nodes = map(np.asarray, jax.jit(net.apply)(p, trees))
    assert roots.shape == (4, 6) and nodes.shape == (4, trees.token.shape[1], 6)
    for b, t in enumerate(TREES):
        np.testing.assert_allclose(roots[b], np_eval(t, p), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(nodes[b, int(np.asarray(trees.size)[b]) :], 0.0)


@pytest.mark.slow
def test_padding_invariance_alone_vs_in_padded_batch():
    net, p = _params()
    alone = rn.pack_trees([TREES[2]])
    batch = rn.pack_trees(TREES, max_nodes=25)
    r_alone, _ = net.apply(p, alone)
    r_batch, _ = net.apply(p, batch)
    np.testing.assert_allclose(r_batch[2], r_alone[0], rtol=1e-6, atol=1e-7)
    # unbatched trees and extra batch dimensions
    single = rn.Trees(*(a[2] for a in batch))
    np.testing.assert_allclose(net.apply(p, single)[0], r_alone[0], rtol=1e-6, atol=1e-7)
    grid = rn.Trees(*(a.reshape((2, 2, *a.shape[1:])) for a in batch))
    np.testing.assert_allclose(net.apply(p, grid)[0].reshape(4, -1), r_batch, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_gradients_match_finite_differences():
    net, p = _params(H=4, V=4)
    trees = rn.pack_trees(TREES[:3])
    target = jax.random.normal(jax.random.key(5), (3, 4))

    @jax.jit
    def loss(params):
        roots, _ = net.apply(params, trees)
        return jnp.sum((roots - target) ** 2)

    jax.config.update("jax_enable_x64", True)
    try:
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), p)
        check_grads(loss, (p64,), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
    finally:
        jax.config.update("jax_enable_x64", False)
    g = jax.grad(loss)(p)
    # token 3 appears only in trees[1] and trees[2]; every embedding row used gets a gradient
    assert np.all(np.abs(np.asarray(g.embed)).sum(-1) > 0)


def test_tree_nodes_post_order():
    token, left, right, leaf = rn.tree_nodes(((0, 1), 2))
    assert leaf == [True, True, False, True, False]
    assert token[:2] == [0, 1] and token[3] == 2
    assert (left[2], right[2]) == (0, 1) and (left[4], right[4]) == (2, 3)


def test_bad_inputs_raise_clear_errors():
    net, p = _params()
    trees = rn.pack_trees(TREES)
    with pytest.raises(ValueError, match="trees.left: a child index must lie in"):
        net.apply(p, trees._replace(left=trees.left.at[0, 2].set(4)))
    with pytest.raises(ValueError, match="trees.size"):
        net.apply(p, trees._replace(size=trees.size.at[0].set(0)))
    with pytest.raises(ValueError, match="trees.token: leaf tokens must lie in"):
        net.apply(p, trees._replace(token=trees.token.at[0, 0].set(9)))
    with pytest.raises(TypeError, match="trees.is_leaf: expected bool"):
        net.apply(p, trees._replace(is_leaf=trees.is_leaf.astype(jnp.int32)))
    with pytest.raises(ValueError, match="trees.right: expected shape"):
        net.apply(p, trees._replace(right=trees.right[:, :3]))
    with pytest.raises(TypeError, match="trees: expected"):
        net.apply(p, (trees.token,))
    with pytest.raises(ValueError, match="params: expected embed"):
        rn.recursive_net(8, 4).apply(p, trees)
    with pytest.raises(ValueError, match="tree: expected an int leaf"):
        rn.pack_trees([(1, 2, 3)])
    with pytest.raises(ValueError, match="max_nodes"):
        rn.pack_trees(TREES, max_nodes=3)
    with pytest.raises(ValueError, match="vocab_size"):
        rn.recursive_net(4, 0)
