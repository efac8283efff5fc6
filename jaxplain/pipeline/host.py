"""The host side of a dataset run: the user's data as checked, fixed-size batches.

Runs in the loader thread: items are split into inputs and targets, checked (the
message names the item), re-chunked into `batch_size` rows and the last batch is
padded to the device batch, so every call of the method has one shape.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Iterator, NamedTuple

import jax
import numpy as np

from .._core import validate as V
from . import shards as _shards
from .config import RunConfig
from .stream import all_finite, is_array, pad_rows, take_rows


class HostBatch(NamedTuple):
    index: int
    start: int
    x: np.ndarray  # padded to the device batch (unless the batch is already saved)
    target: np.ndarray | None
    n_valid: int
    digest: str | None


def report_non_finite(arr: np.ndarray, policy: str, *, message: Any, stacklevel: int,
                      first_row: int = 0) -> None:
    """Raises (`policy` "raise") or warns ("warn") when rows of `arr` hold NaN/inf.

    `message(n_bad, rows)` builds the text from the count of bad rows and the
    first five of them (numbered from `first_row`)."""
    bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if policy == "ignore" or not bad.any():
        return
    msg = message(int(bad.sum()), (first_row + np.flatnonzero(bad)[:5]).tolist())
    if policy == "raise":
        raise ValueError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel)


class HostData:
    """The data of one run, normalised; `batches()` yields its `HostBatch`es.

    A per-example `target` array in `kwargs` is taken out of `kwargs` (it is sliced
    per batch instead). With `saved` set (the indices of a folder's finished shards),
    each batch carries a digest of its inputs, and saved batches are not padded.
    """

    def __init__(self, batches: Iterable | Any, config: RunConfig, kwargs: dict, model: Any):
        self.config = config
        self.model = model
        self.saved: set[int] | None = None
        self.n_classes: int | None = None
        self.items, self.total = self._normalise(batches, kwargs)
        self.target_keyword = "target" in kwargs

    # -- what the data is ------------------------------------------------------------------
    def _normalise(self, batches, kwargs):
        """Normalises `batches` to an iterable of items; slices a per-example target."""
        if batches is None or isinstance(batches, (str, bytes)):
            V.fail(
                "batches",
                "an array (N, ...) or an iterable of batches",
                type(batches).__name__,
                TypeError,
            )
        target = kwargs.get("target")
        per_example = (
            is_array(target) and not isinstance(target, (str, bytes)) and np.ndim(target) >= 1
        )
        step = self.config.batch_size
        if is_array(batches) and not isinstance(batches, (list, tuple)):
            arr = batches
            if np.ndim(arr) < 2:
                V.fail("batches", "an array with a batch axis (N, ...)", f"shape {np.shape(arr)}")
            n = int(np.shape(arr)[0])
            if not per_example:
                return (arr[i : i + step] for i in range(0, n, step)), n
            if np.shape(target) != (n,):
                V.fail(
                    "target", f"one target per example, shape ({n},)", f"shape {np.shape(target)}"
                )
            kwargs.pop("target")
            return ((arr[i : i + step], target[i : i + step]) for i in range(0, n, step)), n
        if per_example:
            V.fail(
                "target",
                "an int, 'predicted' or a callable (per-example targets of a stream go "
                "in the data as (x, target) pairs)",
                f"an array of shape {np.shape(target)}",
            )
        try:
            it = iter(batches)
        except TypeError:
            V.fail(
                "batches",
                "an array (N, ...) or an iterable of batches",
                type(batches).__name__,
                TypeError,
            )
        total = None
        if isinstance(batches, (list, tuple)):
            try:
                total = sum(int(np.shape(self._split(b, i)[0])[0]) for i, b in enumerate(batches))
            except (TypeError, ValueError, IndexError):
                total = None  # reported with context when the item is reached
        return it, total

    def expected_rows(self, index: int) -> int:
        """Examples in batch `index` as far as known now (`batch_size` if the length is not)."""
        bs = self.config.batch_size
        if self.total is None:
            return bs
        return max(0, min(bs, self.total - index * bs))

    def _split(self, item: Any, i: int) -> tuple[Any, Any]:
        if isinstance(item, dict):
            kx, kt = self.config.keys
            if kx not in item:
                V.fail(
                    "batches",
                    f"dict items with the key {kx!r} (set keys=)",
                    f"keys {sorted(item)} in item {i}",
                )
            return item[kx], item.get(kt)
        if (
            isinstance(item, (tuple, list))
            and len(item) == 2
            and np.ndim(item[1]) <= 1
            and np.ndim(item[0]) >= 2
        ):
            return item[0], item[1]
        return item, None

    # -- the batches -----------------------------------------------------------------------
    def batches(self) -> Iterator[HostBatch]:
        """Re-chunks the stream into `batch_size` rows, checks it, pads the last batch."""
        bs = self.config.batch_size
        xs: list[np.ndarray] = []
        ts: list[np.ndarray] = []
        buffered, index = 0, 0
        first = None  # (example shape, dtype, has target) of item 0
        for i, item in enumerate(self.items):
            x, t = self._split(item, i)
            x = self._check_x(x, i)
            first = first or self._first(x, t)
            x = self._like_first(x, t, i, first)
            if first[2]:
                ts.append(self._check_t(t, x.shape[0], i, x))
            xs.append(x)
            buffered += x.shape[0]
            while buffered >= bs:
                bx, xs = take_rows(xs, bs)
                bt = None
                if first[2]:
                    bt, ts = take_rows(ts, bs)
                yield self._make(index, bx, bt)
                index, buffered = index + 1, buffered - bs
        if buffered:
            bx, _ = take_rows(xs, buffered)
            bt = take_rows(ts, buffered)[0] if first[2] else None
            yield self._make(index, bx, bt)

    def _first(self, x: np.ndarray, t: Any) -> tuple:
        if t is not None and self.target_keyword:
            raise ValueError("target: given both as a keyword and inside the data; pass one")
        return x.shape[1:], x.dtype, t is not None

    def _like_first(self, x: np.ndarray, t: Any, i: int, first: tuple) -> np.ndarray:
        example_shape, dtype, has_target = first
        if x.shape[1:] != example_shape:
            V.fail(
                "batches",
                f"examples of shape {example_shape} like the first batch",
                f"shape {x.shape[1:]} in item {i}",
            )
        if (t is not None) != has_target:
            V.fail("batches", "targets in every item or in none", f"item {i} differs from item 0")
        return x if x.dtype == dtype else x.astype(dtype)

    def _make(self, index: int, x: np.ndarray, t: np.ndarray | None) -> HostBatch:
        start, n_valid = index * self.config.batch_size, x.shape[0]
        digest = None
        if self.saved is not None:
            digest = _shards.input_digest(x, t)
            if index in self.saved:  # nothing to pad or send
                return HostBatch(index, start, x, t, n_valid, digest)
        rows = self.config.rows
        t = None if t is None else pad_rows(t, rows)
        return HostBatch(index, start, pad_rows(x, rows), t, n_valid, digest)

    # -- checks ----------------------------------------------------------------------------
    def _check_x(self, x: Any, i: int) -> np.ndarray:
        name = f"batches (item {i})"
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            V.fail(name, "a floating array of inputs", "PRNG keys", TypeError)
        try:
            arr = np.asarray(x)
        except Exception:  # noqa: BLE001 - ragged lists and exotic objects
            V.fail(name, "an array (n, ...) of floats", type(x).__name__, TypeError)
        if arr.dtype.kind not in "f" and arr.dtype.name != "bfloat16":
            V.fail(
                name,
                "floating inputs (cast images with x.astype(np.float32) / 255)",
                f"dtype {arr.dtype}",
                TypeError,
            )
        if arr.ndim < 2 or arr.shape[0] < 1 or 0 in arr.shape:
            V.fail(name, "a non-empty batch (n, ...) with at least 2 dims", f"shape {arr.shape}")
        if arr.dtype == np.float64 and not jax.config.jax_enable_x64:
            with np.errstate(over="ignore"):  # values beyond float32 become inf: reported below
                arr = arr.astype(np.float32)
        if self.config.nan_policy != "ignore" and not all_finite(arr):
            self._non_finite(arr, name)
        return arr

    def _non_finite(self, arr: np.ndarray, name: str) -> None:
        report_non_finite(
            arr, self.config.nan_policy, stacklevel=6,
            message=lambda n, rows: (
                f"{name}: expected finite inputs (no NaN or inf), got non-finite values in "
                f"{n} examples (rows {rows} of this item); pass nan_policy='ignore' "
                f"to explain them anyway"))

    def _check_t(self, t: Any, n: int, i: int, x: np.ndarray) -> np.ndarray:
        name = f"batches (item {i}) target"
        arr = np.asarray(t)
        if arr.dtype.kind not in "iu":
            V.fail(name, "integer class indices", f"dtype {arr.dtype}", TypeError)
        if arr.ndim == 0:
            arr = np.full((n,), arr)
        if arr.shape != (n,):
            V.fail(name, f"one target per example, shape ({n},)", f"shape {arr.shape}")
        if self.n_classes is None:
            out = jax.eval_shape(self.model, jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype))
            shape = getattr(out, "shape", ())
            self.n_classes = shape[-1] if len(shape) == 2 else -1
            if self.n_classes < 0:
                V.fail(
                    name,
                    "no per-example targets: the model returns one scalar per example",
                    repr(shape),
                )
        if arr.min() < 0 or arr.max() >= self.n_classes:
            V.fail(
                name,
                f"class indices in [0, {self.n_classes})",
                f"values in [{arr.min()}, {arr.max()}]",
            )
        return arr.astype(np.int32)
