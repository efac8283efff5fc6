"""Peak memory of one call: host RSS growth, XLA's buffer accounting, CUDA peaks of torch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from jaxplain._compile import jit

from .harness import block


def rss_mb() -> float | None:
    """Current resident set size of this process in MB (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss / 2**20


def _trim() -> None:
    """Returns freed heap memory to the OS (glibc), so RSS growth reflects the next call."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_growth(fn: Callable[[], Any], interval: float = 0.002) -> float | None:
    """Peak growth of host RSS (MB) during one call, sampled by a thread.

    Freed heap memory is handed back to the OS first (`malloc_trim`), but
    allocators with their own pools (XLA's, PyTorch's) may still reuse memory
    kept from earlier calls without growing RSS: a lower bound on the call's
    working set; compare it between settings rather than across tools.
    """
    try:
        import psutil
    except ImportError:
        return None
    proc = psutil.Process()
    _trim()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        block(fn())
    finally:
        stop.set()
        th.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return (peak[0] - base) / 2**20


def xla_memory_mb(fn: Callable, *args: Any) -> float | None:
    """XLA's own buffer accounting for `jax.jit(fn)(*args)`: temporaries + outputs + args (MB).

    Deterministic (no sampling); `None` when the backend does not report it.
    """
    try:
        compiled = jit(fn).lower(*args).compile()
    except Exception:  # noqa: BLE001 - not every backend/function supports it
        return None
    return compiled_memory_mb(compiled)


def compiled_memory_mb(compiled: Any) -> float | None:
    """`xla_memory_mb` of an already compiled program (`jit(fn).lower(...).compile()`)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if m is None:
        return None
    total = 0
    for attr in ("temp_size_in_bytes", "output_size_in_bytes", "argument_size_in_bytes"):
        total += int(getattr(m, attr, 0) or 0)
    return total / 2**20


def cuda_peak_mb(fn: Callable[[], Any]) -> float | None:
    """Peak CUDA memory torch allocates during one call (MB), from its own counters;
    None unless torch is running on a GPU (the peers on CPU: see `peak_rss_growth`)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    block(fn())
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20
