"""Ground-truth masks for the localisation metrics: checked on the host where they
are, or on the device with the call's other value checks (one read for all)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._core import validate as V
from .base import view_shape


@functools.lru_cache(maxsize=None)
def _mask_faults(size: int, xp: Any = jnp) -> Callable[[Any], Any]:
    """[entries other than 0/1, their min, their max, examples with no True pixel, the
    first of them]."""

    def faults(m):
        flat = m.reshape(-1, size).astype(xp.float32)
        odd = (flat != 0) & (flat != 1)
        n_odd = odd.sum()
        lo = xp.where(n_odd > 0, flat.min(), 0.0)
        hi = xp.where(n_odd > 0, flat.max(), 1.0)
        empty = ~(flat != 0).any(axis=1)
        found = (n_odd, lo, hi, empty.sum(), xp.argmax(empty))
        return xp.stack([xp.asarray(v).astype(xp.int32) for v in found])

    return faults


def _report_mask(name: str, faults: Any, per_example: bool) -> None:
    n_odd, lo, hi, n_empty, first = (int(v) for v in faults)
    if n_odd:
        V.fail(name, "booleans or 0/1 values", f"values in [{lo}, {hi}]")
    if n_empty:
        more = f" and {n_empty - 1} more" if n_empty > 1 else ""
        where = f"examples [{first}]{more}" if per_example else "the shared mask"
        V.fail(name, "at least one True pixel per example", f"an empty mask for {where}")


def check_mask(mask: Any, x_shape: tuple[int, ...], name: str = "mask") -> jax.Array:
    """A ground-truth mask `(H, W)` or `(N, H, W)` of booleans or 0/1 -> bool `(N, H, W)`.

    Every example needs at least one pixel inside its mask.
    """
    n, h, w, _ = view_shape(x_shape)
    if mask is None or isinstance(mask, (str, dict)):
        V.fail(name, "a boolean mask (H, W) or (N, H, W)", type(mask).__name__, TypeError)
    try:
        dtype = jnp.result_type(mask)
    except TypeError:
        V.fail(name, "a boolean mask (H, W) or (N, H, W)", type(mask).__name__, TypeError)
    shape = tuple(np.shape(mask))
    if len(x_shape) == 4 and shape == (n, h, w, 1):
        mask = mask[..., 0] if isinstance(mask, jax.Array) else np.asarray(mask)[..., 0]
        shape = shape[:3]
    if shape not in ((h, w), (n, h, w)):
        V.fail(name, f"a mask of shape {(h, w)} or {(n, h, w)}", f"shape {shape}")
    if V.is_concrete(mask) and not isinstance(mask, jax.Array):  # a host mask, where it is
        arr = np.asarray(mask)
        _report_mask(name, _mask_faults(h * w, np)(arr), arr.ndim == 3)
        return V.to_device(np.broadcast_to(arr.astype(bool), (n, h, w)))  # no eager op
    if V.is_concrete(mask):  # with the call's other device checks: one read for all
        V.check_on_device(mask, name, "mask faults", _mask_faults(h * w), 5,
                          functools.partial(_report_mask, name, per_example=len(shape) == 3))
    elif dtype != jnp.bool_ and not jnp.issubdtype(dtype, jnp.integer):  # values unknown
        V.fail(name, "booleans or 0/1 integers", f"dtype {dtype}", TypeError)
    return jnp.broadcast_to(jnp.asarray(mask).astype(bool), (n, h, w))


# ---- statistics ------------------------------------------------------------------------------
