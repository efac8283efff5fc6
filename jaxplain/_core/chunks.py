"""The default chunk size of a call on an accelerator, from the compiled program's memory.

On CPU (where the compile layer's rewrites apply) cache-sized chunks are fastest and
the default is the compile layer's (`_compile.default_chunk`, 64). Elsewhere a
chunk should be as large as memory allows: `device_batch_size` compiles the model's
forward and backward pass on a few rows (without running it), reads the bytes per
row from `memory_analysis()`, and fits as many rows as a share of the device's free
memory holds, between `MIN_ROWS` and `MAX_ROWS`. The answer is cached per
architecture, input shape and device, so a call pays it once.
"""

from __future__ import annotations

from typing import Any, Callable

import math

import jax
import jax.numpy as jnp

from .._compile import platform_of, rewrites_for
from .cache import traced_cached

PROBE_ROWS = 16
MIN_ROWS, MAX_ROWS = 64, 4096
MEMORY_SHARE = 0.25
"""The share of the device's free memory one chunk's model inputs may take: room for
the method's own buffers and for the caller's."""
UNKNOWN_MEMORY = 2 * 2**30
"""The budget assumed when the device reports no memory statistics (CPU devices)."""


def device_batch_size(model: Any, x: Any, checks: Callable[[], Any] | None = None) -> int | None:
    """Model inputs per chunk for a call on `x` with `batch_size=None`, or None where the
    compile layer's (CPU) default applies. `checks` (the call's input checks, compiling
    nothing) runs before the probe compiles, where it is not cached yet: bad input is
    refused before any compile."""
    platform = platform_of((x,), {})
    if rewrites_for(platform) or not (hasattr(model, "apply") and hasattr(model, "params")):
        return None
    shape = (PROBE_ROWS,) + tuple(x.shape[1:])

    def probe():
        if checks is not None:
            checks()
        return _bytes_per_row(model, shape, x.dtype)

    per_row = traced_cached(probe, model, jax.ShapeDtypeStruct(shape, x.dtype),
                            ("chunk", platform))
    if per_row is None:
        return None
    rows = int(_budget(x) // max(per_row, 1))
    return max(MIN_ROWS, min(MAX_ROWS, rows - rows % 8))


def _bytes_per_row(model: Any, shape: tuple[int, ...], dtype: Any) -> float | None:
    def grad(m, z):
        return jax.grad(lambda u: jnp.sum(jnp.asarray(m(u), jnp.float32)))(z)

    try:
        compiled = jax.jit(grad).lower(model, jax.ShapeDtypeStruct(shape, dtype)).compile()
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - a model that cannot be differentiated or analysed
        return None
    if mem is None:
        return None
    total = (getattr(mem, "temp_size_in_bytes", 0) + getattr(mem, "output_size_in_bytes", 0)
             + jnp.dtype(dtype).itemsize * math.prod(shape))
    return total / shape[0]


def _budget(x: Any) -> float:
    device = next(iter(x.devices())) if isinstance(x, jax.Array) else jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if not stats or "bytes_limit" not in stats:
        return MEMORY_SHARE * UNKNOWN_MEMORY
    free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return MEMORY_SHARE * max(free, 0)
