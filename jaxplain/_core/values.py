"""Checks of the *values* of inputs (NaN, inf, label ranges), without host round trips.

A host (NumPy) array is scanned on the host, where it is. A `jax.Array` may live on
an accelerator, where reading it back costs a copy and a sync, so inside a public
call (`deferred_checks()`, which the registry's wrapper opens) its checks are
*deferred*: they are collected while the arguments are validated, and run as one
small jitted program right before the call's first program is dispatched, whose
single result (one int32 per check) is the call's only device-to-host read. A
failing check raises the usual `ValueError` naming the argument, before the
method's program runs (or compiles). A `jax.Array` cannot change, so a passed
check is remembered while the array lives: calling again on the same arrays reads
nothing back.

Outside a public call's context (library helpers, direct internal use) a check of
a `jax.Array` runs at once with the same program. Under a caller's `jax.jit`
values are unknown and nothing is checked.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import before_dispatch, jit

NAN_POLICIES = ("raise", "warn", "ignore")

_local = threading.local()


def is_concrete(*xs: Any) -> bool:
    """True when none of `xs` is a tracer (so values can be inspected)."""
    if len(xs) == 1 and isinstance(xs[0], (np.ndarray, jax.Array)):  # the common case
        return not isinstance(xs[0], jax.core.Tracer)
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(xs))


# ---- arrays the caller already checked ---------------------------------------------------------


@contextlib.contextmanager
def values_checked(*arrays: Any) -> Iterator[None]:
    """Marks `arrays` as already checked for finite values (by the caller, on the host).

    `check_finite` skips these exact objects inside the block, so a pipeline that
    validated a batch before sending it to the device does not pay a second scan.
    """
    ids = getattr(_local, "checked", None)
    if ids is None:
        ids = _local.checked = set()
    new = [id(a) for a in arrays if id(a) not in ids]
    ids.update(new)
    try:
        yield
    finally:
        ids.difference_update(new)


def is_checked(x: Any) -> bool:
    return id(x) in getattr(_local, "checked", ())


# ---- facts about immutable arrays -------------------------------------------------------------

_FACTS: dict[int, tuple[weakref.ref, dict]] = {}
_FACTS_SIZE = 64


def array_fact(x: Any, what: str, compute: Callable[[], Any]) -> Any:
    """`compute()`, a fact about the values of `x`, remembered while `x` lives when
    `x` is a concrete `jax.Array` (it cannot change; NumPy arrays can, and are
    recomputed). Entries are held weakly, at most `_FACTS_SIZE` arrays."""
    if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
        return compute()
    facts = _facts_of(x)
    if what not in facts:
        facts[what] = compute()
    return facts[what]


def known_fact(x: Any, what: str) -> Any:
    """A remembered fact about a `jax.Array` `x`, or None."""
    entry = _FACTS.get(id(x))
    if entry is None or entry[0]() is not x:
        return None
    return entry[1].get(what)


def _facts_of(x: jax.Array) -> dict:
    key = id(x)
    entry = _FACTS.get(key)
    if entry is None or entry[0]() is not x:

        def forget(ref, key=key):
            if _FACTS.get(key, (None,))[0] is ref:
                del _FACTS[key]

        if len(_FACTS) >= _FACTS_SIZE:
            _FACTS.pop(next(iter(_FACTS)), None)
        entry = _FACTS[key] = (weakref.ref(x, forget), {})
    return entry[1]


# ---- deferred device checks -------------------------------------------------------------------


class _Check:
    """One deferred check of a device array: `program(array)` (a module-level function,
    traced inside the one check program) gives `size` int32 numbers on the device;
    `report(numbers)` raises or warns on the host. `fact` names the numbers in the
    array's remembered facts, so a second call on the same array reads nothing."""

    __slots__ = ("name", "array", "program", "size", "report", "fact")

    def __init__(self, name, array, program, size, report, fact):
        self.name, self.array, self.program, self.size = name, array, program, size
        self.report, self.fact = report, fact


def check_on_device(array: jax.Array, name: str, fact: str, program: Callable[[jax.Array], jax.Array],
                    size: int, report: Callable[[np.ndarray], None]) -> None:
    """Checks the values of a concrete `jax.Array` (the argument `name`) without a read
    of its own.

    `program(array) -> int32 (size,)` runs on the device with every other check of the
    public call, as one program with one read (`deferred_checks`); `report` gets the
    numbers on the host and raises (or warns). The numbers are remembered as the
    array's fact `fact` while it lives: a later call on the same array reads nothing.
    """
    known = known_fact(array, fact)
    if known is not None:
        return report(known)
    defer(_Check(name, array, program, size, report, fact))


@contextlib.contextmanager
def deferred_checks() -> Iterator[None]:
    """Inside a public call: device checks wait for the call's first dispatch (or the
    end of the block), and all run as one program with one read."""
    outer = getattr(_local, "pending", None)
    _local.pending = []
    try:
        yield
        flush()
    finally:
        _local.pending = outer


@contextlib.contextmanager
def unchecked() -> Iterator[None]:
    """Inside the block, device checks of `jax.Array` values are collected and dropped,
    never run (`jaxplain.plan` traces a call without running it; host arrays are still
    checked where they are)."""
    outer = getattr(_local, "pending", None)
    _local.pending = []
    try:
        yield
    finally:
        _local.pending = outer


def defer(check: _Check) -> None:
    pending = getattr(_local, "pending", None)
    if pending is None:
        _run([check])
    else:
        pending.append(check)


@before_dispatch
def flush() -> None:
    """Runs the pending device checks of this thread's public call (the compile layer
    calls this before every top-level dispatch)."""
    pending = getattr(_local, "pending", None)
    if pending:
        _local.pending = []
        _run(pending)


def _run(checks: list[_Check]) -> None:
    programs = tuple(c.program for c in checks)
    # concrete arrays read inside a caller's transformation (a method called under the
    # user's `jax.jit(jax.grad(...))` with `x` closed over) run now, not into the trace
    with jax.ensure_compile_time_eval():
        flat = np.asarray(_check_program(tuple(c.array for c in checks), programs=programs))  # one read
    pos = 0
    for c in checks:
        numbers = flat[pos:pos + c.size]
        pos += c.size
        _facts_of(c.array)[c.fact] = numbers
        c.report(numbers)


@jit(static_argnames=("programs",))
def _check_program(arrays, *, programs):
    return jnp.concatenate([jnp.asarray(p(a), jnp.int32).reshape(-1)
                            for a, p in zip(arrays, programs)])


def _count_nonfinite(a: jax.Array) -> jax.Array:
    return jnp.sum(~jnp.isfinite(a))[None]


def _min_max(a: jax.Array) -> jax.Array:
    return jnp.stack([jnp.min(a), jnp.max(a)])


# ---- the checks -------------------------------------------------------------------------------


def check_finite(x: Any, name: str, nan_policy: str = "raise") -> None:
    """Raises (or warns, per `nan_policy`) when a concrete `x` holds NaN or inf."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy: expected one of {NAN_POLICIES}, got {nan_policy!r}")
    if nan_policy == "ignore" or not is_concrete(x) or is_checked(x):
        return
    if isinstance(x, jax.Array):
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return
        return check_on_device(x, name, "nonfinite", _count_nonfinite, 1,
                               lambda v: _report_nonfinite(name, int(v[0]), nan_policy))
    _report_nonfinite(name, count_nonfinite(x), nan_policy)


def count_nonfinite(x: Any) -> int:
    """Non-finite entries of a host array (0 for non-float dtypes)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fc" and arr.dtype.name != "bfloat16":
        return 0
    return int(arr.size - np.count_nonzero(np.isfinite(arr)))


def _report_nonfinite(name: str, bad: int, nan_policy: str) -> None:
    if not bad:
        return
    msg = (f"{name}: expected finite values (no NaN or inf), got {bad} non-finite entries; "
           f"pass nan_policy='ignore' where offered to accept them")
    if nan_policy == "raise":
        raise ValueError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=4)


def check_range(v: jax.Array, name: str, k: int, what: str) -> None:
    """Integer indices `v` (a concrete array) must lie in `[0, k)`; `what` is the plural noun."""
    if isinstance(v, jax.Array):
        return check_on_device(v, name, "range", _min_max, 2,
                               lambda m: report_range(name, int(m[0]), int(m[1]), k, what))
    a = np.asarray(v)
    report_range(name, a.min(), a.max(), k, what)


def report_range(name: str, lo: Any, hi: Any, k: int, what: str) -> None:
    if lo < 0 or hi >= k:
        raise ValueError(f"{name}: expected {what} in [0, {k}), got values in [{lo}, {hi}]")


def check_result_finite(result: Any, name: str = "result", nan_policy: str = "raise") -> None:
    """Checks every floating leaf of a computed result for NaN/inf (a host sync; for use
    outside jit, e.g. after a batch)."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy: expected one of {NAN_POLICIES}, got {nan_policy!r}")
    if nan_policy == "ignore":
        return
    bad = sum(count_nonfinite(leaf) for leaf in jax.tree.leaves(result) if is_concrete(leaf))
    if bad:
        msg = (f"{name}: the computation produced {bad} NaN/inf values (non-finite model outputs "
               f"or gradients)")
        if nan_policy == "raise":
            raise ValueError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
