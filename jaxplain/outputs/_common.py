"""Python-time checks and small traceable helpers shared by the output explanations."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._core import validate as V
from .._core.cache import eval_shape_cached

OTHER = "other"
"""`target_class="other"`: any class but the one predicted at `x`."""


def n_classes(model: Any, x: jax.Array) -> int:
    """The number of classes `K` of a model returning `(N, K)` outputs on `x` (K >= 2).

    Uses a shape evaluation (nothing compiles); failures of the model name `x`,
    outputs of another shape name `model`.
    """
    out = V.model_call(lambda: eval_shape_cached(lambda m, z: m(z), model, x, "outputs"), x)
    shape = getattr(out, "shape", None)
    if shape is None:
        V.fail("model", "outputs as one array (N, classes)", jax.tree.structure(out), TypeError)
    if len(shape) != 2 or shape[0] != x.shape[0] or shape[1] < 2:
        V.fail("model", f"outputs of shape ({x.shape[0]}, classes) with at least 2 classes "
               f"(logits or probabilities)", f"shape {tuple(shape)}")
    return int(shape[1])


def check_target_class(v: Any, n: int, k: int) -> np.ndarray | jax.Array | None:
    """`target_class`: an int, one int per example, or `"other"` (returned as None)."""
    if isinstance(v, str):
        V.check_choice(v, "target_class", (OTHER,))
        return None
    if v is None:
        V.fail("target_class", "an int class, one int per example or 'other'", None, TypeError)
    return V.check_indices(v, "target_class", n, k, what=("class index", "class indices"),
                           accepts="an int, an int array (N,) or 'other'")


def check_bounds(bounds: Any, x: jax.Array) -> tuple[jax.Array, jax.Array] | None:
    """`bounds=(lo, hi)`: numbers or arrays broadcastable to one example or to `x`.

    Returns the two arrays (leading dims of 1 added, as `V.check_baseline`) or None.
    `x` must lie inside them (checked when concrete).
    """
    if bounds is None:
        return None
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        V.fail("bounds", "None or a pair (lo, hi) of numbers or arrays", repr(bounds), TypeError)
    lo = V.check_baseline(bounds[0], x, "bounds")
    hi = V.check_baseline(bounds[1], x, "bounds")
    if V.is_concrete(lo, hi):
        lo_np, hi_np = np.asarray(lo), np.asarray(hi)
        if not (lo_np < hi_np).all():
            V.fail("bounds", "lo < hi everywhere", f"lo={lo_np.min()}, hi={hi_np.max()}")
        if V.is_concrete(x):
            xs = np.asarray(x)
            outside = int(np.sum((xs < lo_np) | (xs > hi_np)))
            if outside:
                V.fail("x", "values inside bounds (the valid input range)",
                       f"{outside} values outside [{lo_np.min()}, {hi_np.max()}]")
    return lo, hi


def check_stacked(tree: Any, name: str) -> int:
    """A pytree whose array leaves all share a leading axis of `M >= 1` members; returns M."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        V.fail(name, "a pytree of arrays stacked along a leading member axis", "no arrays",
               TypeError)
    sizes = set()
    for leaf in leaves:
        shape = V.shape_of(leaf)
        if not hasattr(leaf, "shape") and not isinstance(leaf, (np.ndarray, np.generic)):
            V.fail(name, "arrays as leaves", type(leaf).__name__, TypeError)
        if len(shape) == 0:
            V.fail(name, "leaves with a leading member axis (M, ...)", "a scalar leaf")
        sizes.add(shape[0])
    if len(sizes) != 1:
        V.fail(name, "every leaf stacked with the same number of members on axis 0",
               f"leading sizes {sorted(sizes)}")
    return sizes.pop()


def dual_norm(g: jax.Array, distance: str, seg: jax.Array | None, d: int) -> jax.Array:
    """Per row, the dual norm of gradients `g (B, ...)` for the distance (traceable)."""
    flat = g.reshape(g.shape[0], -1)
    if distance == "l2":
        return jnp.sqrt(jnp.sum(flat * flat, axis=1))
    if distance == "l1":
        return jnp.max(jnp.abs(flat), axis=1)
    return jnp.sqrt(jnp.max(group_sq(g, seg, d), axis=1))


def group_sq(v: jax.Array, seg: jax.Array, d: int) -> jax.Array:
    """Squared L2 norm of `v (B, H, W[, C])` over each segment: `(B, d)`."""
    sq = v * v
    if sq.ndim == 4:
        sq = jnp.sum(sq, axis=-1)
    flat = seg.reshape(seg.shape[0], -1)
    return jax.vmap(lambda s, q: jnp.zeros((d,), q.dtype).at[s].add(q))(flat, sq.reshape(flat.shape))


def norm(v: jax.Array, distance: str, seg: jax.Array | None, d: int) -> jax.Array:
    """Per row, the distance `||v||` of changes `v (B, ...)` (L2, L1 or the group norm)."""
    flat = v.reshape(v.shape[0], -1)
    if distance == "l2":
        return jnp.sqrt(jnp.sum(flat * flat, axis=1))
    if distance == "l1":
        return jnp.sum(jnp.abs(flat), axis=1)
    return jnp.sum(jnp.sqrt(group_sq(v, seg, d)), axis=1)


def rows(v: jax.Array, like: jax.Array) -> jax.Array:
    """A per-row vector `(B,)` shaped to broadcast against `like (B, ...)`."""
    return v.reshape(v.shape + (1,) * (like.ndim - 1))
