"""Input validation shared by every public function.

Runs at Python time, before anything is traced or compiled, and raises
`ValueError`/`TypeError` that name the argument, what was expected and what was
received. Value checks (NaN, label ranges) only run on concrete arrays; under an
outer `jax.jit` they are skipped, shape and dtype checks still run.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np

NAN_POLICIES = ("raise", "ignore")


def is_concrete(*xs: Any) -> bool:
    """True when none of `xs` is a tracer (so values can be inspected)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(xs))


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def fail(name: str, expected: str, got: Any, cls: type = ValueError):
    raise cls(f"{name}: expected {expected}, got {got}")


def check_array(x: Any, name: str = "x", *, min_ndim: int = 2, nan_policy: str = "raise") -> jax.Array:
    """A batched floating array `(N, ...)` with N >= 1; returns it as a `jax.Array`."""
    if isinstance(x, (str, bytes)) or x is None or isinstance(x, dict):
        fail(name, "a floating array of shape (N, ...)", type(x).__name__, TypeError)
    try:
        dtype = jnp.result_type(x)
    except TypeError:
        fail(name, "a floating array of shape (N, ...)", type(x).__name__, TypeError)
    if not jnp.issubdtype(dtype, jnp.floating):
        fail(
            name,
            "a floating-point array (cast images with x.astype(jnp.float32) / 255)",
            f"dtype {dtype}",
            TypeError,
        )
    shape = _shape(x)
    if len(shape) < min_ndim:
        fail(
            name,
            f"a batch with at least {min_ndim} dims (N, ...); add a batch axis with x[None]",
            f"shape {shape}",
        )
    if shape[0] < 1:
        fail(name, "at least one example along axis 0", f"shape {shape}")
    check_finite(x, name, nan_policy)
    return jnp.asarray(x)


def check_finite(x: Any, name: str, nan_policy: str = "raise") -> None:
    check_choice(nan_policy, "nan_policy", NAN_POLICIES)
    if nan_policy == "raise" and is_concrete(x):
        arr = np.asarray(x)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            fail(name, "finite values (no NaN or inf)", f"{bad} non-finite entries")


def check_int(v: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        fail(name, f"an int >= {minimum}", repr(v), TypeError)
    v = int(v)
    if v < minimum or (maximum is not None and v > maximum):
        rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        fail(name, f"an int {rng}", v)
    return v


def check_float(v: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
                open_min: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        fail(name, "a real number", repr(v), TypeError)
    v = float(v)
    if not np.isfinite(v):
        fail(name, "a finite number", v)
    if minimum is not None and (v < minimum or (open_min and v == minimum)):
        fail(name, f"a number {'>' if open_min else '>='} {minimum}", v)
    if maximum is not None and v > maximum:
        fail(name, f"a number <= {maximum}", v)
    return v


def check_batch_size(batch_size: Any) -> int | None:
    if batch_size is None:
        return None
    return check_int(batch_size, "batch_size", minimum=1)


def check_choice(v: Any, name: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(v, str) or v not in choices:
        fail(name, f"one of {choices}", repr(v))
    return v


def check_key(key: Any, name: str = "key") -> jax.Array:
    """A JAX PRNG key (typed `jax.random.key` or raw uint32 pair); ints are seeds."""
    if key is None:
        fail(name, "a PRNG key such as jax.random.key(0) (this method is stochastic)", None, TypeError)
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, (jax.Array, np.ndarray)) or isinstance(key, jax.core.Tracer):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                fail(name, "a single PRNG key (shape ())", f"shape {key.shape}")
            return key
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return jax.random.wrap_key_data(key)
    fail(name, "a PRNG key such as jax.random.key(0)", f"{type(key).__name__} {getattr(key, 'shape', '')}", TypeError)


def check_baseline(baseline: Any, x: jax.Array, name: str = "baseline") -> jax.Array:
    """A scalar, an array broadcastable to one example `x.shape[1:]`, or per-example `x.shape`.

    Returns an array broadcast to `x.shape`.
    """
    if baseline is None:
        baseline = 0.0
    if isinstance(baseline, str):
        fail(name, "a number or an array", repr(baseline), TypeError)
    try:
        dtype = jnp.result_type(baseline)
    except TypeError:
        fail(name, "a number or an array", type(baseline).__name__, TypeError)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        fail(name, "a numeric array", f"dtype {dtype}", TypeError)
    bshape = _shape(baseline)
    ok = False
    for target in (x.shape, x.shape[1:]):
        try:
            ok = np.broadcast_shapes(bshape, target) == tuple(target)
        except ValueError:
            ok = False
        if ok and len(bshape) <= len(target):
            break
        ok = False
    if not ok:
        fail(
            name,
            f"a scalar, an array broadcastable to one example {tuple(x.shape[1:])} "
            f"or to the batch {tuple(x.shape)}",
            f"shape {bshape}",
        )
    check_finite(baseline, name)
    b = jnp.asarray(baseline, dtype=x.dtype)
    return jnp.broadcast_to(b, x.shape)
