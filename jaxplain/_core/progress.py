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

from .._compile import report_requests, reporting

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


def with_bar(call: Callable[[], Any], *, total: int | None, desc: str, delay: float = 0.0):
    """`call()` with its programs traced to report progress, and a tqdm bar of model
    evaluations (shown after `delay` seconds; `total` None: a counter)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="eval", leave=False, delay=delay)
    _bars[threading.get_ident()] = bar
    try:
        with report_requests():
            out = jax.block_until_ready(call())
        jax.effects_barrier()
        if total is not None and bar.n < total:  # evaluations outside chunk loops
            bar.update(total - bar.n)
        return out
    finally:
        _bars.pop(threading.get_ident(), None)
        bar.close()
