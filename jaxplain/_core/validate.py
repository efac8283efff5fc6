"""Input validation shared by every public function.

Runs at Python time, before anything is traced or compiled, and raises
`ValueError`/`TypeError` that name the argument, what was expected and what was
received. Value checks (NaN, label ranges) only run on concrete arrays; under an
outer `jax.jit` they are skipped, shape and dtype checks still run.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import keep_numpy
from .values import NAN_POLICIES as NAN_POLICIES  # the value checks, re-exported
from .values import array_fact as array_fact
from .values import check_finite as check_finite
from .values import check_on_device as check_on_device
from .values import check_range as check_range
from .values import check_result_finite as check_result_finite
from .values import is_checked as is_checked
from .values import is_concrete as is_concrete
from .values import values_checked as values_checked

MAX_INT32 = 2**31 - 1
"""Upper bound of counts: flat evaluation indices are int32 on device."""


def shape_of(x: Any) -> tuple[int, ...]:
    shape = getattr(x, "shape", None)
    return shape if type(shape) is tuple else tuple(np.shape(x))


def dtype_of(x: Any) -> np.dtype:
    """`jnp.result_type(x)`; arrays answer from `x.dtype` (the general rule costs ~7 us)."""
    dt = getattr(x, "dtype", None)
    if isinstance(dt, np.dtype) and isinstance(x, (np.ndarray, jax.Array)):
        return jax.dtypes.canonicalize_dtype(dt)
    return jnp.result_type(x)


def fail(name: str, expected: str, got: Any, cls: type = ValueError):
    raise cls(f"{name}: expected {expected}, got {got}")


def check_array(x: Any, name: str = "x", *, min_ndim: int = 2, nan_policy: str = "raise") -> jax.Array:
    """A batched floating array `(N, ...)` with N >= 1; returns it as a `jax.Array`."""
    if isinstance(x, (str, bytes)) or x is None or isinstance(x, dict):
        fail(name, "a floating array of shape (N, ...)", type(x).__name__, TypeError)
    try:
        dtype = dtype_of(x)
    except TypeError:
        fail(name, "a floating array of shape (N, ...)", type(x).__name__, TypeError)
    if getattr(dtype, "kind", "") != "f" and not jnp.issubdtype(dtype, jnp.floating):  # kind: fast
        fail(
            name,
            "a floating-point array (cast images with x.astype(jnp.float32) / 255)",
            f"dtype {dtype}",
            TypeError,
        )
    shape = shape_of(x)
    if len(shape) < min_ndim:
        fail(
            name,
            f"a batch with at least {min_ndim} dims (N, ...); add a batch axis with x[None]",
            f"shape {shape}",
        )
    if shape[0] < 1:
        fail(name, "at least one example along axis 0", f"shape {shape}")
    if 0 in shape:
        fail(name, "an array with no empty axis", f"shape {shape}")
    check_finite(x, name, nan_policy)
    wide = np.dtype(getattr(x, "dtype", np.result_type(x) if not isinstance(x, jax.Array) else dtype))
    if wide == np.float64 and not jax.config.jax_enable_x64:
        warnings.warn(f"{name}: float64 input is computed in float32 (jax_enable_x64 is off); "
                      f"pass float32 to silence this", UserWarning, stacklevel=3)
    if wide == np.float16:
        warnings.warn(f"{name}: float16 input is computed in float16 where the model keeps it "
                      f"(an 11-bit mantissa: sums over many features or steps lose digits); "
                      f"pass float32 for float32 accuracy", UserWarning, stacklevel=3)
    if wide == np.float64 and not jax.config.jax_enable_x64 and is_concrete(x) and not is_checked(x):
        big = np.abs(np.asarray(x, np.float64))
        if (big[np.isfinite(big)] > np.finfo(np.float32).max).any():
            fail(name, "values that fit float32 (|x| <= 3.4e38; JAX computes in float32)",
                 "float64 values that overflow to inf")
    return to_device(x)


def to_device(x: Any, dtype: Any = None) -> jax.Array:
    """`x` ready to be passed to a jitted program, without an eager XLA op.

    `jnp.asarray` compiles a tiny program per new shape; `jax.device_put` does
    not. Where the compile layer says so (`_compile.keep_numpy`: a top-level call
    whose programs run on CPU), a host array is returned as NumPy in JAX's dtype
    instead, which a jitted program takes without a device copy.
    """
    if isinstance(x, jax.Array):
        return x if dtype is None or x.dtype == dtype else x.astype(dtype)
    arr = np.asarray(x, dtype)
    arr = arr.astype(jax.dtypes.canonicalize_dtype(arr.dtype), copy=False)
    if keep_numpy():
        return arr
    return jax.device_put(arr)


def check_count(v: Any, name: str, *, minimum: int = 1, maximum: int = MAX_INT32) -> int:
    """A count such as `steps` or `n_samples`: an int in `[minimum, maximum]`."""
    return check_int(v, name, minimum=minimum, maximum=maximum)


def check_n_evals(n_examples: int, per_example: int, name: str) -> int:
    """Guards the flat int32 evaluation range `n_examples * per_example` (`name` is the knob)."""
    total = int(n_examples) * int(per_example)
    if total > MAX_INT32:
        fail(name, f"at most {MAX_INT32 // max(int(n_examples), 1)} per example for a batch of "
             f"{n_examples} (the flat evaluation index is int32); split the batch", per_example)
    return total


def check_budget(v: Any, name: str, n_examples: int, *, per_unit: int = 1, fixed: int = 0,
                 minimum: int = 1) -> int:
    """A count `v` (steps, samples...) whose model evaluations fit the int32 flat index.

    Every example costs `v * per_unit + fixed` evaluations; `n_examples` times that
    must stay <= `MAX_INT32`. Raises before any tracing, naming `name`.
    """
    v = check_count(v, name, minimum=minimum)
    per_unit, n = max(int(per_unit), 1), max(int(n_examples), 1)
    limit = (MAX_INT32 // n - int(fixed)) // per_unit
    if v > limit:
        each = f" x {per_unit} model evaluations" if per_unit > 1 else ""
        fail(name, f"at most {max(limit, 0)} for a batch of {n} examples ({name}{each} per example "
             f"must fit the int32 flat evaluation index); split the batch or lower {name}", v)
    check_n_evals(n, v * per_unit + int(fixed), name)
    return v


def check_indices(v: Any, name: str, n: int, k: int, *, what: tuple[str, str],
                  accepts: str) -> Any:
    """An int, or one int per example, each in `[0, k)`, as `(n,)` int32.

    `what` is the singular and plural noun for the messages (`("class index",
    "class indices")`), `accepts` the whole list of forms the argument takes. A
    concrete value comes back as a host array (for `to_device`); under a caller's
    jit only the dtype and shape are checked and a broadcast tracer comes back.
    """
    one, many = what
    if isinstance(v, bool):
        raise TypeError(f"{name}: expected an int {one}, got a bool")
    if isinstance(v, numbers.Integral):
        t = int(v)
        if not 0 <= t < k:
            raise ValueError(f"{name}: expected a {one} in [0, {k}), got {t}")
        return np.full((n,), t, np.int32)
    if isinstance(v, (list, tuple)):  # a sequence of ints is one per example
        if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in v):
            raise TypeError(f"{name}: expected {accepts} (a sequence of ints), got {v!r:.80}")
        v = np.asarray(v, np.int64) if v else np.zeros((0,), np.int64)
    try:
        dtype = dtype_of(v)
    except TypeError:
        raise TypeError(f"{name}: expected {accepts}, got {type(v).__name__}") from None
    if getattr(dtype, "kind", "") not in ("i", "u") and not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name}: expected integer {many}, got dtype {dtype}")
    shape = shape_of(v)
    if shape not in ((), (n,)):
        raise ValueError(f"{name}: expected one {one} per example, shape ({n},), got shape {shape}")
    if not is_concrete(v):
        return jnp.broadcast_to(jnp.asarray(v, jnp.int32), (n,))
    if shape == ():
        if isinstance(v, jax.Array):  # a device scalar: one per example, checked on device
            v = jnp.broadcast_to(v, (n,))
        else:
            return check_indices(int(v), name, n, k, what=what, accepts=accepts)
    check_range(v, name, k, many)
    if isinstance(v, jax.Array):
        return v if v.dtype == jnp.int32 else v.astype(jnp.int32)  # stays on the device
    return np.asarray(v).astype(np.int32)


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
    return check_int(batch_size, "batch_size", minimum=1, maximum=MAX_INT32)


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

    Returns the baseline in `x`'s dtype with `x.ndim` dims (leading 1s added),
    not broadcast: the jitted method broadcasts it (`full_baseline`). A scalar
    baseline therefore crosses to the device as one number, not as a copy of `x`
    (16 images of 32x32x3: about 0.15 ms per call on CPU).
    """
    if baseline is None:
        baseline = 0.0
    if isinstance(baseline, str):
        fail(name, "a number or an array", repr(baseline), TypeError)
    if type(baseline) is float or (type(baseline) is int and abs(baseline) < 2**24):
        # the common case, without the array machinery (about 0.1 ms right after a program)
        if not np.isfinite(baseline):
            fail(name, "finite values (no NaN or inf)", baseline)
        return to_device(np.full((1,) * len(x.shape), baseline, x.dtype))
    try:
        dtype = jnp.result_type(baseline)
    except TypeError:
        fail(name, "a number or an array", type(baseline).__name__, TypeError)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        fail(name, "a numeric array", f"dtype {dtype}", TypeError)
    bshape = shape_of(baseline)
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
    aligned = (1,) * (len(x.shape) - len(bshape)) + tuple(bshape)
    if isinstance(baseline, jax.Array):
        return baseline.astype(x.dtype).reshape(aligned)
    return to_device(np.asarray(baseline, x.dtype).reshape(aligned))


def full_baseline(b: jax.Array, x: jax.Array) -> jax.Array:
    """A `check_baseline` result broadcast to `x.shape` (traceable; free under jit)."""
    return jnp.broadcast_to(b, x.shape)


def model_call(fn, x: Any, batched: Any = None):
    """`fn()` (a shape evaluation of the model on `x`), its failures named.

    jaxplain's own errors that already name their argument (`layer: ...`,
    `model: ...`) pass through; anything else the model raised becomes a
    `ValueError` naming `x`, with the model's message kept. When `batched(shape)`
    (the same evaluation on inputs of `shape`) succeeds on `(1,) + x.shape`, `x` was
    one example without its batch axis, and the message says to add it.
    """
    try:
        return fn()
    except (ValueError, TypeError) as e:
        if str(e).startswith(("layer:", "model:")):
            raise
        err = e
    except Exception as e:  # noqa: BLE001 - e.g. Flax's ScopeParamShapeError on a wrong x
        err = e
    shape = tuple(x.shape)
    if batched is not None:
        try:
            batched((1,) + shape)
        except Exception:  # noqa: BLE001 - not that either: report the first failure
            pass
        else:
            raise ValueError(
                f"x: expected a batch (N, ...) of inputs, got shape {shape}, which the model "
                f"accepts only as one example: add a batch axis with x[None]"
            ) from err
    raise ValueError(
        f"x: the model cannot be called on inputs of shape {shape} "
        f"(expected a batch (N, ...) the model accepts): {type(err).__name__}: {err}"
    ) from err
