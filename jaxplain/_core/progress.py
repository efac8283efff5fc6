"""Progress bars for long eager calls.

A call that shows progress runs inside `_compile.report_requests()`: its
top-level programs are then traced in their *reporting* variant (a separate
`jax.jit` cache of the compile layer), whose chunk loops call `report` for each
finished chunk, a `jax.debug.callback` to the host. Without a bar, or under a
caller's `jax.jit`, programs hold no host callback at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import jax

from .._compile import eager, report_requests, reporting
from . import validate as V

_bars: dict[int, Any] = {}


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
    if reporting():
        jax.debug.callback(tick, count)


def progress_jit(static_argnames: tuple[str, ...]) -> Callable[[Callable], Callable]:
    """The compile layer's `jit` (kept for the methods that still name it)."""
    from .._compile import jit

    return jit(static_argnames=static_argnames)


def run(
    fn: Callable, *args: Any, progress: Any, x: Any, total: int | None, desc: str, **kwargs: Any
):
    """Calls `fn`, showing a tqdm bar when `progress` and the call is eager on concrete `x`."""
    if not isinstance(progress, bool):
        V.fail("progress", "a bool", repr(progress), TypeError)
    if not progress or not V.is_concrete(x) or not eager():
        return fn(*args, **kwargs)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="eval", leave=False)
    _bars[threading.get_ident()] = bar
    try:
        with report_requests():
            out = jax.block_until_ready(fn(*args, **kwargs))
        jax.effects_barrier()
        return out
    finally:
        _bars.pop(threading.get_ident(), None)
        bar.close()
