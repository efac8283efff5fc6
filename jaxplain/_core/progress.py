"""Progress bars for long eager runs of the perturbation methods.

A method decorated with `progress_jit` has two compiled variants: the plain one,
and one whose chunk loop (`perturbation.stream`) reports each finished chunk to
the host with `jax.debug.callback`. The second variant is traced with a
trace-time flag set and lives in its own `jax.jit` cache, so neither variant can
leak into the other. `run` picks the reporting variant only when asked for and
when called outside any JAX transformation: under a caller's `jax.jit` nothing
prints,
and without `progress=True` the program holds no host callback at all.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any

import jax

from .._compile.xla import eager as _eager
from .._compile.xla import jit
from . import validate as V

_state = threading.local()
_bars: dict[int, Any] = {}


def tracing_with_progress() -> bool:
    """True while a reporting variant is being traced (read by the chunk loop)."""
    return getattr(_state, "on", False)


@contextlib.contextmanager
def _tracing():
    old = tracing_with_progress()
    _state.on = True
    try:
        yield
    finally:
        _state.on = old


def tick(count: Any) -> None:
    """Host side of the per-chunk callback: advance the active bar by `count`."""
    # Callbacks may run on a runtime thread: fall back to any active bar.
    bar = _bars.get(threading.get_ident())
    if bar is None and _bars:
        bar = next(iter(_bars.values()))
    if bar is not None:
        bar.update(int(count))


def report(count: Any) -> None:
    """Inside traced code: report `count` (an int, may be traced) finished model evaluations."""
    if tracing_with_progress():
        jax.debug.callback(tick, count)


def progress_jit(static_argnames: tuple[str, ...]) -> Callable[[Callable], Callable]:
    """`jax.jit` with a second, reporting variant selected by `progress=True`."""

    def deco(fn: Callable) -> Callable:
        plain = jit(fn, static_argnames=static_argnames)

        @functools.wraps(fn)
        def with_reports(*args, **kwargs):
            with _tracing():
                return fn(*args, **kwargs)

        loud = jit(with_reports, static_argnames=static_argnames)

        @functools.wraps(fn)
        def call(*args, progress: bool = False, **kwargs):
            return (loud if progress else plain)(*args, **kwargs)

        # AOT lowering / memory analysis of the quiet variant; looked up when called,
        # so that importing jaxplain initialises no backend
        call.lower = lambda *a, **k: plain.lower(*a, **k)
        call.plain, call.reporting = plain, loud
        return call

    return deco


def run(
    fn: Callable, *args: Any, progress: Any, x: Any, total: int | None, desc: str, **kwargs: Any
):
    """Calls a `progress_jit` function, showing a tqdm bar when `progress` and `x` is concrete."""
    if not isinstance(progress, bool):
        V.fail("progress", "a bool", repr(progress), TypeError)
    if not progress or not V.is_concrete(x) or not _eager():
        return fn(*args, progress=False, **kwargs)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="eval", leave=False)
    _bars[threading.get_ident()] = bar
    try:
        out = jax.block_until_ready(fn(*args, progress=True, **kwargs))
        jax.effects_barrier()
        return out
    finally:
        _bars.pop(threading.get_ident(), None)
        bar.close()
