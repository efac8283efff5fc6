"""The progress bar of a dataset run: resumed runs start at the saved count, and the
rate counts only the work computed in this call.

A resumed `explain_to_shards` skips the batches its folder already holds. The bar
starts at those examples (`initial`) instead of jumping to them, and its
images/second is `computed / seconds`, where `seconds` leaves out the time spent
reading and checking skipped batches; the skipped examples are not counted either.
"""

from __future__ import annotations

import functools
import time
from typing import Any


@functools.lru_cache(maxsize=None)
def _bar_class():
    from tqdm.auto import tqdm

    class Bar(tqdm):
        """tqdm whose rate (and so its time left) comes from the owning `Progress`."""

        owner: "Progress | None" = None

        @property
        def format_dict(self):
            d = super().format_dict
            if self.owner is not None:
                d["rate"] = self.owner.rate or None
            return d

    return Bar


class Progress:
    """Counts a run's examples: skipped (already saved) and computed in this call.

    Args:
      total: examples in the dataset, or None when unknown (a counter).
      initial: examples expected to be skipped (saved by an earlier run).
      enabled: draw a bar (else only count).
      desc: the bar's label.

    Example:
      >>> p = Progress(total=10, initial=4, enabled=False, desc="demo")
      >>> p.computed(6)
      >>> p.n, p.n_computed
      (10, 6)
      >>> p.close()
    """

    def __init__(self, *, total: int | None, initial: int, enabled: bool, desc: str):
        self.initial = int(initial)
        self.n_computed = 0
        self.skip_seconds = 0.0
        self._t0 = time.perf_counter()
        self._stopped: float | None = None
        self.bar: Any = _bar_class()(
            total=total,
            initial=self.initial,
            unit="img",
            disable=not enabled,
            smoothing=0,
            desc=desc,
        )
        self.bar.owner = self

    @property
    def n(self) -> int:
        """Examples done: the skipped ones (from the start) and the computed ones."""
        return self.initial + self.n_computed

    @property
    def seconds(self) -> float:
        """Time spent on computed work: wall time minus the time spent skipping."""
        end = self._stopped if self._stopped is not None else time.perf_counter()
        return max(end - self._t0 - self.skip_seconds, 0.0)

    @property
    def rate(self) -> float:
        """Computed examples per second of computing (0 before any is computed)."""
        s = self.seconds
        return self.n_computed / s if self.n_computed and s > 0 else 0.0

    def skipped(self, n_valid: int, expected: int, seconds: float) -> None:
        """A saved batch of `n_valid` examples was skipped in `seconds`; `initial`
        counted `expected` examples for it (they differ only for the last batch of
        a stream of unknown length)."""
        self.skip_seconds += max(float(seconds), 0.0)
        if n_valid != expected:
            self.initial += n_valid - expected
            self.bar.initial = self.initial
            self.bar.update(n_valid - expected)

    def computed(self, n_valid: int) -> None:
        """`n_valid` examples were computed and delivered."""
        self.n_computed += int(n_valid)
        self.bar.update(int(n_valid))

    def close(self) -> None:
        if self._stopped is None:
            self._stopped = time.perf_counter()
        self.bar.close()
