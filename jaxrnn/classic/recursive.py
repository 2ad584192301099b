r"""Recursive (tree-structured) networks (Pollack 1990; Goller & Kuechler 1996; Socher et al.
2011): one composition applied bottom-up over binary trees, the same weights at every node.

.. math::
   v_{\text{leaf}} = E[\text{token}] \qquad
   v_p = f\big([v_{\text{left}}; v_{\text{right}}]\, W + b\big)

A tree is given as index arrays over its nodes, listed in *topological order* (every child
before its parent), with the root last:

* ``token (M,)``: the token id of each leaf (ignored at internal nodes);
* ``left (M,)``, ``right (M,)``: child indices of each internal node (ignored at leaves), each
  smaller than the node's own index;
* ``is_leaf (M,)``: bool;
* ``size ()``: number of valid nodes; nodes ``size..M-1`` are padding and the root is node
  ``size - 1``.

All arrays may carry leading batch dimensions ``B...`` (a batch of trees padded to one ``M``).
:func:`apply` walks the nodes in order inside one :func:`jax.lax.scan` whose carry is the table
of node vectors ``(B, M, H)``: step ``i`` writes node ``i`` from the rows of its children, which
earlier steps have written. The scan here is over nodes rather than time (it is not a cell
on :func:`jaxrnn.run` because its step reads arbitrary earlier steps, not just the previous one).
Padding nodes are never read by a valid node, so a tree's result does not depend on the padding
around it. Everything is ``jit``-compatible and differentiable end to end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells.base import Array, check_positive_int, resolve_activation


class Trees(NamedTuple):
    token: Array  # (B..., M) int32 leaf tokens
    left: Array  # (B..., M) int32 left child index (internal nodes)
    right: Array  # (B..., M) int32 right child index (internal nodes)
    is_leaf: Array  # (B..., M) bool
    size: Array  # (B...,) int32 number of valid nodes; the root is node size - 1


class RecursiveParams(NamedTuple):
    embed: Array  # (V, H) leaf embeddings
    w: Array  # (2H, H) composition weights, rows [left; right]
    b: Array  # (H,)


class RecursiveNet(NamedTuple):
    """``init(key) -> RecursiveParams``; ``apply(params, trees) -> (roots (B..., H),
    nodes (B..., M, H))``."""

    init: Callable[..., RecursiveParams]
    apply: Callable[..., tuple[Array, Array]]
    hidden_size: int
    vocab_size: int


def check_trees(trees: Trees, vocab_size: int | None = None) -> Trees:
    """Validate a (batch of) trees; concrete arrays are checked for topological order, index
    ranges and sizes. Raises ``TypeError``/``ValueError`` naming the field."""
    if not isinstance(trees, Trees):
        raise TypeError(
            f"trees: expected a jaxrnn.classic.recursive.Trees, got {type(trees).__name__}"
        )
    shape = tuple(np.shape(trees.token))
    if len(shape) < 1:
        raise ValueError(f"trees.token: expected shape (B..., M), got {shape}")
    for name in ("token", "left", "right", "is_leaf"):
        a = getattr(trees, name)
        if tuple(np.shape(a)) != shape:
            raise ValueError(
                f"trees.{name}: expected shape {shape} (that of token), got {tuple(np.shape(a))}"
            )
        dt = jnp.asarray(a).dtype
        want_bool = name == "is_leaf"
        if (want_bool and dt != jnp.bool_) or (
            not want_bool and not jnp.issubdtype(dt, jnp.integer)
        ):
            raise TypeError(
                f"trees.{name}: expected {'bool' if want_bool else 'integer'} dtype, got {dt}"
            )
    if tuple(np.shape(trees.size)) != shape[:-1]:
        raise ValueError(
            f"trees.size: expected shape {shape[:-1]} (batch shape), "
            f"got {tuple(np.shape(trees.size))}"
        )
    if not jnp.issubdtype(jnp.asarray(trees.size).dtype, jnp.integer):
        raise TypeError(f"trees.size: expected integer dtype, got {jnp.asarray(trees.size).dtype}")
    if any(isinstance(a, jax.core.Tracer) for a in trees):
        return trees
    M = shape[-1]
    tok, lft, rgt, leaf, size = (np.asarray(a) for a in trees)
    if size.size and (size.min() < 1 or size.max() > M):
        raise ValueError(
            f"trees.size: values must lie in [1, M={M}], got min {size.min()} max {size.max()}"
        )
    idx = np.arange(M)
    valid = idx < size[..., None]
    internal = valid & ~leaf
    for name, child in (("left", lft), ("right", rgt)):
        bad = internal & ((child < 0) | (child >= idx))
        if bad.any():
            where = np.argwhere(bad)[0]
            raise ValueError(
                f"trees.{name}: a child index must lie in [0, own index) (topological order), "
                f"got {child[tuple(where)]} at node {tuple(where)}"
            )
    if vocab_size is not None:
        bad = valid & leaf & ((tok < 0) | (tok >= vocab_size))
        if bad.any():
            raise ValueError(
                f"trees.token: leaf tokens must lie in [0, vocab_size={vocab_size}), got "
                f"{tok[bad].min()}..{tok[bad].max()}"
            )
    return trees


def recursive_net(hidden_size: int, vocab_size: int, *, activation="tanh") -> RecursiveNet:
    """A recursive network with leaf embeddings and one shared binary composition.

    Args:
      hidden_size: ``H``, the size of every node vector.
      vocab_size: ``V``, number of leaf tokens.
      activation: ``f`` (``tanh``).

    Returns:
      :class:`RecursiveNet`. ``apply(params, trees)`` returns the root vectors ``(B..., H)`` and
      all node vectors ``(B..., M, H)`` (zeros at padding nodes).

    Example:
      >>> net = recursive_net(16, vocab_size=3)
      >>> trees = pack_trees([((0, 1), 2), (1, 2)])   # nested pairs of leaf tokens
      >>> roots, nodes = net.apply(net.init(jax.random.key(0)), trees)   # roots: (2, 16)
    """
    H = check_positive_int(hidden_size, "hidden_size")
    V = check_positive_int(vocab_size, "vocab_size")
    f = resolve_activation(activation, "activation")

    def init(key) -> RecursiveParams:
        ke, kw = jax.random.split(key)
        return RecursiveParams(
            embed=jax.random.normal(ke, (V, H), jnp.float32) / np.sqrt(H),
            w=jax.nn.initializers.glorot_uniform()(kw, (2 * H, H), jnp.float32),
            b=jnp.zeros((H,), jnp.float32),
        )

    def apply(params: RecursiveParams, trees: Trees) -> tuple[Array, Array]:
        if params.w.shape != (2 * H, H) or params.embed.shape != (V, H):
            raise ValueError(
                f"params: expected embed ({V}, {H}) and w ({2 * H}, {H}), got embed "
                f"{tuple(params.embed.shape)} and w {tuple(params.w.shape)}"
            )
        check_trees(trees, V)
        params = RecursiveParams(*(jnp.asarray(a) for a in params))
        batch = tuple(np.shape(trees.token)[:-1])
        M = np.shape(trees.token)[-1]
        flat = Trees(
            *(jnp.asarray(a).reshape((-1, M)) for a in trees[:4]),
            jnp.asarray(trees.size).reshape((-1,)),
        )
        Bf = flat.token.shape[0]
        rows = jnp.arange(Bf)

        def node(table, i):
            with jax.named_scope("recursive_node"):
                leaf_vec = params.embed[jnp.clip(flat.token[:, i], 0, V - 1)]
                lc = table[rows, jnp.clip(flat.left[:, i], 0, M - 1)]
                rc = table[rows, jnp.clip(flat.right[:, i], 0, M - 1)]
                comp = f(jnp.concatenate([lc, rc], axis=-1) @ params.w + params.b)
                v = jnp.where(flat.is_leaf[:, i, None], leaf_vec, comp)
                v = jnp.where((i < flat.size)[:, None], v, 0.0)
                return table.at[:, i].set(v), None

        table0 = jnp.zeros((Bf, M, H), params.w.dtype)
        table, _ = jax.lax.scan(node, table0, jnp.arange(M))
        roots = table[rows, flat.size - 1]
        return roots.reshape((*batch, H)), table.reshape((*batch, M, H))

    return RecursiveNet(init, apply, H, V)


# --------------------------------------------------------------------------- building trees


def tree_nodes(tree: Any) -> tuple[list[int], list[int], list[int], list[bool]]:
    """Flatten a nested tree -- an int is a leaf token, a 2-tuple ``(left, right)`` an internal
    node -- into post-order (children before parents) node lists ``token, left, right,
    is_leaf``."""
    token, left, right, is_leaf = [], [], [], []

    def visit(t):
        if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
            token.append(int(t))
            left.append(0)
            right.append(0)
            is_leaf.append(True)
            return len(token) - 1
        if isinstance(t, (tuple, list)) and len(t) == 2:
            li, ri = visit(t[0]), visit(t[1])
            token.append(0)
            left.append(li)
            right.append(ri)
            is_leaf.append(False)
            return len(token) - 1
        raise ValueError(f"tree: expected an int leaf or a 2-tuple (left, right), got {t!r}")

    visit(tree)
    return token, left, right, is_leaf


def pack_trees(trees: Sequence[Any], max_nodes: int | None = None) -> Trees:
    """Pack nested trees (see :func:`tree_nodes`) into a padded batch :class:`Trees` with
    leading dimension ``len(trees)`` and ``M = max_nodes`` (default: the largest tree)."""
    if len(trees) == 0:
        raise ValueError("trees: expected at least one tree, got an empty sequence")
    flat = [tree_nodes(t) for t in trees]
    biggest = max(len(f[0]) for f in flat)
    M = biggest if max_nodes is None else max_nodes
    if M < biggest:
        raise ValueError(f"max_nodes: the largest tree has {biggest} nodes, got max_nodes={M}")
    out = np.zeros((4, len(trees), M), np.int32)
    for b, f in enumerate(flat):
        for k in range(4):
            out[k, b, : len(f[k])] = f[k]
    sizes = np.array([len(f[0]) for f in flat], np.int32)
    return Trees(
        token=jnp.asarray(out[0]),
        left=jnp.asarray(out[1]),
        right=jnp.asarray(out[2]),
        is_leaf=jnp.asarray(out[3].astype(bool)),
        size=jnp.asarray(sizes),
    )


__all__ = [
    "Trees",
    "RecursiveParams",
    "RecursiveNet",
    "recursive_net",
    "check_trees",
    "tree_nodes",
    "pack_trees",
]
