"""Feature sets (which pixels move together) and applying coalitions on device.

A feature set is an integer label map `segments` of shape `(H, W)` (shared by all
examples) or `(N, H, W)` (one per example) with labels `0..d-1` and no gaps. A
coalition is a mask over the `d` features: 1 keeps a feature's pixels from `x`,
0 replaces them with the baseline.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as V


def check_segments(segments: Any, x_shape: tuple[int, ...], name: str = "segments") -> tuple[jax.Array, int]:
    """Validates a label map against images `x_shape = (N, H, W[, C])`.

    Returns `(segments as int32 (N, H, W), d)` where `d` is the number of features
    (the largest count over examples). Labels must be `0..d_n-1` with no gaps in
    each example.
    """
    if segments is None:
        V.fail(name, "an integer label map (H, W) or (N, H, W)", None, TypeError)
    try:
        dtype = jnp.result_type(segments)
    except TypeError:
        V.fail(name, "an integer label map (H, W) or (N, H, W)", type(segments).__name__, TypeError)
    if not jnp.issubdtype(dtype, jnp.integer):
        V.fail(name, "integer labels", f"dtype {dtype}", TypeError)
    n, hw = x_shape[0], tuple(x_shape[1:3])
    shape = tuple(np.shape(segments))
    if shape not in (hw, (n,) + hw):
        V.fail(name, f"a label map of shape {hw} or {(n,) + hw}", f"shape {shape}")
    if not V.is_concrete(segments):
        raise ValueError(f"{name}: must be a concrete array (its number of labels sets shapes), got a tracer")
    arr = np.asarray(segments)
    per = arr.reshape((-1,) + hw) if arr.ndim == 3 else arr[None]
    d = 0
    for i, s in enumerate(per):
        labels = np.unique(s)
        where = f" (example {i})" if arr.ndim == 3 else ""
        if labels[0] != 0 or labels[-1] != len(labels) - 1:
            missing = sorted(set(range(int(labels[-1]) + 1)) - set(labels.tolist()))[:5]
            V.fail(
                name,
                f"labels 0..d-1 with no gaps{where}",
                f"labels from {labels[0]} to {labels[-1]}" + (f", missing {missing}" if missing else ""),
            )
        d = max(d, len(labels))
    seg = jnp.asarray(per, jnp.int32)
    return jnp.broadcast_to(seg, (n,) + hw), d


def pixel_segments(height: int, width: int) -> np.ndarray:
    """One feature per pixel: labels `0..H*W-1` in row-major order."""
    return np.arange(height * width, dtype=np.int32).reshape(height, width)


def grid_segments(height: int, width: int, grid: int | tuple[int, int] = 8) -> np.ndarray:
    """A `grid[0] x grid[1]` grid of rectangular cells (as equal as the size allows).

    >>> grid_segments(4, 4, 2)
    array([[0, 0, 1, 1],
           [0, 0, 1, 1],
           [2, 2, 3, 3],
           [2, 2, 3, 3]], dtype=int32)
    """
    gh, gw = (grid, grid) if isinstance(grid, (int, np.integer)) else tuple(grid)
    V.check_int(gh, "grid", maximum=height)
    V.check_int(gw, "grid", maximum=width)
    rows = (np.arange(height) * gh) // height
    cols = (np.arange(width) * gw) // width
    return (rows[:, None] * gw + cols[None, :]).astype(np.int32)


def apply_coalitions(x: jax.Array, baseline: jax.Array, segments: jax.Array, masks: jax.Array) -> jax.Array:
    """Builds perturbed inputs on device for one or several examples.

    Args:
      x: images `(B, H, W, C)` (or `(B, H, W)`).
      baseline: what replaces removed features, broadcastable to `x`.
      segments: int labels `(B, H, W)` (or `(H, W)`).
      masks: `(B, d)` coalitions. Boolean masks select (`where`), so kept pixels
        equal `x` exactly; floating masks blend `baseline + m * (x - baseline)`
        (soft masks, as in RISE).

    Returns:
      Inputs shaped like `x`.
    """
    if segments.ndim == 2:
        segments = jnp.broadcast_to(segments, x.shape[:1] + segments.shape)
    m = jnp.take_along_axis(masks, segments.reshape(segments.shape[0], -1), axis=1)
    m = m.reshape(segments.shape + (1,) * (x.ndim - 3))
    if masks.dtype == jnp.bool_:
        return jnp.where(m, x, baseline)
    m = m.astype(x.dtype)
    return baseline + m * (x - baseline)
