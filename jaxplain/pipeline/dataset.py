"""Explaining whole datasets: compile-once streaming, resumable output, many devices.

`explain_dataset` runs any jaxplain method over an iterable of batches:

- **compile once**: the stream is re-chunked into batches of exactly `batch_size`
  examples and the last one is padded (padded rows are dropped from the results),
  so every jitted function sees one shape and compiles once per dataset;
- **overlap**: a background thread prepares host batches (your loader, re-chunking,
  checks) while the device computes, the next batch is sent to the device before
  the current one is dispatched, and results of batch `i` are fetched while batch
  `i + 1` runs;
- **reproducible**: for stochastic methods the key of batch `i` is
  `jax.random.fold_in(key, i)`, so results do not depend on where a run resumed;
- **resumable**: with `out=DIR` each batch is written as `DIR/shard_000123.npz`
  (atomic rename) next to a `manifest.json` holding a fingerprint of the run's
  arguments; rerunning the same call skips finished shards. `load_results(DIR)`
  concatenates them;
- **many devices**: with `mesh=` (a `jax.sharding.Mesh` with a "batch" axis) or
  `devices=`, each batch is laid over the devices with
  `NamedSharding(mesh, P("batch"))` and the same jitted method runs on all of them;
  results equal the single-device ones.

Several hosts (`jax.distributed`)
---------------------------------
Attribution is independent per example, so the simplest and most robust way to use
several hosts is one process per host, each explaining its own part of the data on
its local devices and writing its own folder::

    # launched once per host, e.g. by SLURM/`mpirun`/your scheduler, with the same
    # coordinator address; on Cloud TPU and SLURM `initialize()` needs no arguments.
    jax.distributed.initialize(coordinator_address="host0:1234",
                               num_processes=N, process_id=RANK)
    rank, world = jax.process_index(), jax.process_count()
    mesh = jax.make_mesh((jax.local_device_count(),), ("batch",),
                         devices=jax.local_devices())
    jx.explain_dataset(jx.integrated_gradients, model, my_loader(shard=rank, num_shards=world),
                       batch_size=256, mesh=mesh, out=f"results/host{rank:03d}",
                       target="predicted")

then concatenate `load_results("results/host000")`, `... host001`, ... in rank
order. A mesh spanning devices of other processes is rejected: it would need
every host to feed the same global batch in lockstep, for no gain here.

Compilation cache
-----------------
`enable_compilation_cache(path)` turns on JAX's persistent compilation cache, so a
second process with the same shapes loads the compiled programs from disk instead
of compiling them again (call it before the first computation).
"""

from __future__ import annotations

import collections
import hashlib
import os
import time
import warnings
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from . import shards as _shards
from .._core import validate as V
from .shards import load_results as load_results
from .stream import (
    DIRECT,
    TRACE_ERRORS,
    Background,
    all_finite,
    is_array,
    mesh_from,
    method_name,
    pad_rows,
    resolve_method,
    runner,
    take_rows,
    takes,
)
from .._core.types import Explanation
from .._core.models import as_model

__all__ = ["explain_dataset", "load_results", "enable_compilation_cache", "RunSummary"]

PIPELINE_NAN_POLICIES = ("raise", "warn", "ignore")


class RunSummary(NamedTuple):
    """What `explain_dataset(..., out=DIR)` returns once the folder is complete.

    `images_per_second` counts the examples computed in this call (not skipped ones).
    """

    path: str
    n_examples: int
    n_batches: int
    n_computed: int
    n_skipped: int
    seconds: float
    images_per_second: float


class _HostBatch(NamedTuple):
    index: int
    start: int
    x: np.ndarray  # padded to the device batch
    target: np.ndarray | None
    n_valid: int
    digest: str | None


# ---- public API -------------------------------------------------------------------------


def explain_dataset(
    method: Callable | str,
    model: Any,
    batches: Iterable | Any,
    *,
    batch_size: int,
    out: str | os.PathLike | None = None,
    mesh: Mesh | None = None,
    devices: Any = None,
    progress: bool = True,
    nan_policy: str = "raise",
    eval_batch_size: int | None = None,
    keys: tuple[str, str] = ("x", "target"),
    prefetch: int = 2,
    **method_kwargs: Any,
) -> Iterator[Explanation] | RunSummary:
    """Runs `method` over a dataset in fixed-size batches.

    Args:
      method: a jaxplain method such as `jaxplain.integrated_gradients` (or its
        name as a string), or any function `method(model, x, **kwargs)` returning
        an `Explanation` or an array with one row per example.
      model: the model (`Model`, NNX module or callable).
      batches: the data: one array `(N, ...)`, or any iterable (list, generator,
        data loader) of arrays `(n_i, ...)`, of `(x, target)` pairs, or of dicts
        with the keys named by `keys`. Sizes `n_i` may vary; NumPy, JAX and
        anything `np.asarray` accepts work.
      batch_size: examples per call of `method` (every call has this shape).
      out: a folder to write results to (resumable), or None to yield them.
      mesh: a `jax.sharding.Mesh` with an axis named "batch" to lay each batch
        over (other axes replicate).
      devices: alternatively, a list of devices (a one-axis mesh is built).
      progress: show a tqdm progress bar with images/second.
      nan_policy: what to do with NaN/inf in the inputs or in the results:
        "raise" (default), "warn" or "ignore".
      eval_batch_size: passed to the method as its own `batch_size=` (model
        inputs per chunk inside the method).
      keys: the dict keys of the inputs and the targets when items are dicts.
      prefetch: host batches prepared ahead by the background thread.
      **method_kwargs: passed to every call (`target=`, `steps=`, `key=` ...).
        `key` is folded with the batch index. A `target` array with one entry per
        example is sliced per batch when `batches` is one array; otherwise pass
        per-example targets inside the data.

    Returns:
      Without `out`: an iterator of `Explanation`s (NumPy arrays), one per batch
      of `batch_size` examples in order (the last may be shorter). With `out`:
      a `RunSummary` once the whole dataset is written.

    Raises:
      TypeError, ValueError: bad arguments or data (the message names the
        argument and, for data, the batch and example), or `out` holds a run
        with other arguments.

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> from jaxplain import testing
      >>> model = testing.linear_model(jnp.ones((3, 2)))
      >>> def grad_x_input(model, x, *, target):  # any method(model, x, ...) works
      ...     return Explanation(x * model.params[0][:, target])
      >>> data = (np.ones((4, 3), np.float32) for _ in range(3))
      >>> [e.values.shape for e in explain_dataset(grad_x_input, model, data,
      ...                                          batch_size=5, target=1, progress=False)]
      [(5, 3), (5, 3), (2, 3)]
    """
    run = _Run(
        method,
        model,
        batches,
        batch_size=batch_size,
        out=out,
        mesh=mesh,
        devices=devices,
        progress=progress,
        nan_policy=nan_policy,
        eval_batch_size=eval_batch_size,
        keys=keys,
        prefetch=prefetch,
        method_kwargs=method_kwargs,
    )
    if out is None:
        return run.iterate()
    for _ in run.iterate():
        pass
    return run.summary()


def enable_compilation_cache(
    path: str | os.PathLike, *, min_compile_time_secs: float = 0.0, min_entry_size_bytes: int = 0
) -> str:
    """Turns on JAX's persistent compilation cache in folder `path`.

    Compiled programs are stored on disk, and a later process that compiles the
    same program (same function, shapes, devices and JAX version) loads it instead
    of compiling. Call this once at start-up, before the first computation.
    Equivalent to setting `jax_compilation_cache_dir` and the two thresholds with
    `jax.config.update` (or the `JAX_COMPILATION_CACHE_DIR` environment variable).

    The folder is trusted code: do not share it with users you do not trust.

    Args:
      path: cache folder (created if needed).
      min_compile_time_secs: only cache programs that took at least this long to
        compile (JAX's default is 1 s; 0 caches everything).
      min_entry_size_bytes: only cache programs at least this large.

    Returns:
      The absolute cache path.
    """
    if not isinstance(path, (str, os.PathLike)):
        V.fail("path", "a folder path (str or os.PathLike)", type(path).__name__, TypeError)
    V.check_float(min_compile_time_secs, "min_compile_time_secs", minimum=0.0)
    V.check_int(min_entry_size_bytes, "min_entry_size_bytes", minimum=0)
    path = os.path.abspath(os.fspath(path))
    os.makedirs(path, exist_ok=True)
    from jax.experimental.compilation_cache import compilation_cache as cc

    if jax.config.jax_compilation_cache_dir not in (None, "", path):
        cc.reset_cache()  # re-initialise on the new folder at the next compile
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
    return path


# ---- the run ----------------------------------------------------------------------------


class _Run:
    """State of one `explain_dataset` call (validated eagerly, run lazily)."""

    def __init__(
        self,
        method,
        model,
        batches,
        *,
        batch_size,
        out,
        mesh,
        devices,
        progress,
        nan_policy,
        eval_batch_size,
        keys,
        prefetch,
        method_kwargs,
    ):
        self.method = resolve_method(method)
        self.model = as_model(model)
        self.batch_size = V.check_int(batch_size, "batch_size", minimum=1, maximum=V.MAX_INT32)
        self.eval_batch_size = V.check_batch_size(eval_batch_size)
        self.nan_policy = V.check_choice(nan_policy, "nan_policy", PIPELINE_NAN_POLICIES)
        self.progress = bool(progress)
        self.prefetch = V.check_int(prefetch, "prefetch", minimum=1, maximum=64)
        if (
            not isinstance(keys, (tuple, list))
            or len(keys) != 2
            or not all(isinstance(k, str) for k in keys)
        ):
            V.fail(
                "keys",
                "a pair of dict keys (inputs, targets) such as ('image', 'label')",
                repr(keys),
                TypeError,
            )
        self.keys = tuple(keys)
        if "batch_size" in method_kwargs:
            raise TypeError(
                "batch_size: is the number of examples per call here; pass the method's "
                "own chunk size as eval_batch_size="
            )
        for reserved in ("model", "x"):
            if reserved in method_kwargs:
                raise TypeError(
                    f"{reserved}: is passed by explain_dataset; do not give it as a keyword"
                )
        self.kwargs = dict(method_kwargs)
        for name in self.kwargs:  # a typo fails now, not after the loader started
            if not takes(self.method, name):
                raise TypeError(f"{name}: {method_name(self.method)} takes no argument {name!r}")
        self.key = (
            V.check_key(self.kwargs.pop("key")) if self.kwargs.get("key") is not None else None
        )
        self.kwargs.pop("key", None)
        self.mesh = mesh_from(mesh, devices)
        self.n_shards = 1 if self.mesh is None else int(self.mesh.shape["batch"])
        self.rows = -(-self.batch_size // self.n_shards) * self.n_shards  # device batch
        self.data, self.total = self._data(batches)
        if self.mesh is not None:
            self.model = jax.device_put(self.model, NamedSharding(self.mesh, P()))
            if self.key is not None:
                self.key = jax.device_put(self.key, NamedSharding(self.mesh, P()))
        self.folder = None
        if out is not None:
            if not isinstance(out, (str, os.PathLike)):
                V.fail(
                    "out",
                    "a folder path (str or os.PathLike) or None",
                    type(out).__name__,
                    TypeError,
                )
            fp, args = self._fingerprint()
            self.folder = _shards.ShardFolder(out, fp, args)
        self.runner = None
        self.n_classes = None
        self.stats = dict(
            computed=0, computed_examples=0, skipped=0, examples=0, batches=0, seconds=0.0
        )

    # -- data --------------------------------------------------------------------------------
    def _data(self, batches):
        """Normalises `batches` to an iterable of items; slices a per-example target."""
        if batches is None or isinstance(batches, (str, bytes)):
            V.fail(
                "batches",
                "an array (N, ...) or an iterable of batches",
                type(batches).__name__,
                TypeError,
            )
        target = self.kwargs.get("target")
        per_example = (
            is_array(target) and not isinstance(target, (str, bytes)) and np.ndim(target) >= 1
        )
        if is_array(batches) and not isinstance(batches, (list, tuple)):
            arr = batches
            n = int(np.shape(arr)[0]) if np.ndim(arr) >= 1 else 0
            if np.ndim(arr) < 2:
                V.fail("batches", "an array with a batch axis (N, ...)", f"shape {np.shape(arr)}")
            if per_example:
                if np.shape(target) != (n,):
                    V.fail(
                        "target",
                        f"one target per example, shape ({n},)",
                        f"shape {np.shape(target)}",
                    )
                self.kwargs.pop("target")
                step = self.batch_size
                return ((arr[i : i + step], target[i : i + step]) for i in range(0, n, step)), n
            step = self.batch_size
            return (arr[i : i + step] for i in range(0, n, step)), n
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

    def _split(self, item: Any, i: int) -> tuple[Any, Any]:
        if isinstance(item, dict):
            kx, kt = self.keys
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

    def _host_batches(self) -> Iterator[_HostBatch]:
        """Re-chunks the stream into `batch_size` rows, checks it, pads the last batch."""
        xs: list[np.ndarray] = []
        ts: list[np.ndarray] = []
        buffered, start, index = 0, 0, 0
        example_shape = dtype = None
        has_target = None
        for i, item in enumerate(self.data):
            x, t = self._split(item, i)
            x = self._check_x(x, i)
            if example_shape is None:
                example_shape, dtype, has_target = x.shape[1:], x.dtype, t is not None
                if has_target and "target" in self.kwargs:
                    raise ValueError(
                        "target: given both as a keyword and inside the data; pass one"
                    )
            elif x.shape[1:] != example_shape:
                V.fail(
                    "batches",
                    f"examples of shape {example_shape} like the first batch",
                    f"shape {x.shape[1:]} in item {i}",
                )
            if (t is not None) != has_target:
                V.fail(
                    "batches", "targets in every item or in none", f"item {i} differs from item 0"
                )
            if x.dtype != dtype:
                x = x.astype(dtype)
            if has_target:
                t = self._check_t(t, x.shape[0], i, x)
                ts.append(t)
            xs.append(x)
            buffered += x.shape[0]
            while buffered >= self.batch_size:
                bx, xs = take_rows(xs, self.batch_size)
                bt = None
                if has_target:
                    bt, ts = take_rows(ts, self.batch_size)
                yield self._make(index, start, bx, bt)
                index, start, buffered = (
                    index + 1,
                    start + self.batch_size,
                    buffered - self.batch_size,
                )
        if buffered:
            bx, _ = take_rows(xs, buffered)
            bt = take_rows(ts, buffered)[0] if has_target else None
            yield self._make(index, start, bx, bt)

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
        if self.nan_policy != "ignore" and not all_finite(arr):
            bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
            if bad.any():
                rows = np.flatnonzero(bad)[:5].tolist()
                msg = (
                    f"{name}: expected finite inputs (no NaN or inf), got non-finite values in "
                    f"{int(bad.sum())} examples (rows {rows} of this item); pass nan_policy='ignore' "
                    f"to explain them anyway"
                )
                if self.nan_policy == "raise":
                    raise ValueError(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=4)
        return arr

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

    def _make(self, index, start, x, t) -> _HostBatch:
        n_valid = x.shape[0]
        digest = None
        if self.folder is not None:
            digest = _shards.input_digest(x, t)
            if index in self.folder.done:  # nothing to pad or send
                return _HostBatch(index, start, x, t, n_valid, digest)
        return _HostBatch(
            index,
            start,
            pad_rows(x, self.rows),
            None if t is None else pad_rows(t, self.rows),
            n_valid,
            digest,
        )

    # -- device ------------------------------------------------------------------------------
    def _place(self, b: _HostBatch):
        if self.mesh is None:
            x = jax.device_put(b.x)
            t = None if b.target is None else jax.device_put(b.target)
        else:
            sharding = NamedSharding(self.mesh, P("batch"))
            x = jax.device_put(b.x, sharding)
            t = None if b.target is None else jax.device_put(b.target, sharding)
        return x, t

    def _dispatch(self, b: _HostBatch, x, t):
        if self.runner is None:
            self.runner = runner(
                self.method,
                self.kwargs,
                self.mesh,
                self.eval_batch_size,
                self.key is not None,
                t is not None,
                self.rows,
            )
        if self.runner is not DIRECT:
            try:
                with V.values_checked(x):
                    return self.runner(self.model, x, t, self.key, np.int32(b.start))
            except TRACE_ERRORS as e:
                if self.mesh is not None or self.key is not None:
                    raise TypeError(
                        f"method: {method_name(self.method)} cannot run under jax.jit ({type(e).__name__}); "
                        f"explain_dataset needs that for devices=/mesh= and for stochastic methods"
                    ) from e
                self.runner = DIRECT
        kwargs = dict(self.kwargs)  # a method that needs concrete inputs: call it as is
        if t is not None:
            kwargs["target"] = t
        if self.eval_batch_size is not None:
            kwargs["batch_size"] = self.eval_batch_size
        with V.values_checked(x):
            return self.method(self.model, x, **kwargs)

    def _finalize(self, b: _HostBatch, result) -> Explanation:
        if isinstance(result, jax.Array) or isinstance(result, np.ndarray):
            result = Explanation(result)
        if not isinstance(result, Explanation):
            raise TypeError(
                f"method: expected it to return an Explanation or an array, got "
                f"{type(result).__name__}"
            )
        host = jax.device_get(result)
        fields, rowwise = {}, []
        for name, v in zip(Explanation._fields, host):
            if v is None:
                continue
            v = np.asarray(v)
            if v.ndim >= 1 and v.shape[0] == self.rows:
                v = v[: b.n_valid]
                rowwise.append(name)
            fields[name] = v
        if "values" not in rowwise:
            raise ValueError(
                f"method: expected values with one row per example ({self.rows}), got "
                f"shape {fields['values'].shape}"
            )
        if self.nan_policy != "ignore":
            self._check_results(b, fields, rowwise)
        return Explanation(**fields), rowwise

    def _check_results(self, b, fields, rowwise):
        v = fields["values"]  # diagnostics (stderr of tiny samples, ...) may be NaN by design
        if v.dtype.kind != "f" or all_finite(v):
            return
        bad = ~np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1)
        if bad.any():
            rows = (b.start + np.flatnonzero(bad)[:5]).tolist()
            msg = (
                f"method: returned NaN/inf for {int(bad.sum())} examples of batch {b.index} "
                f"(examples {rows}); the model outputs or their gradients are not finite there. "
                f"Pass nan_policy='ignore' to keep such results"
            )
            if self.nan_policy == "raise":
                raise ValueError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)

    # -- loop --------------------------------------------------------------------------------
    def iterate(self) -> Iterator[Explanation]:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.total,
            unit="img",
            disable=not self.progress,
            smoothing=0.1,
            desc=getattr(self.method, "__name__", "explain"),
        )
        t0 = time.perf_counter()
        pending: collections.deque = collections.deque()
        host = Background(self._host_batches(), self.prefetch)
        try:
            nxt = self._next_placed(host, bar)
            while nxt is not None:
                b, x, t = nxt
                pending.append((b, self._dispatch(b, x, t)))  # asynchronous: returns at once
                nxt = self._next_placed(host, bar)  # batch i + 1 is sent while batch i computes
                if len(pending) > 1:
                    yield self._emit(*pending.popleft(), bar)  # results of i - 1 come back
            while pending:
                yield self._emit(*pending.popleft(), bar)
            if self.folder is not None:
                self.folder.finish(self.stats["batches"], self.stats["examples"])
        finally:
            host.close()
            bar.close()
            self.stats["seconds"] = time.perf_counter() - t0

    def _next_placed(self, host, bar):
        for b in host:
            self.stats["batches"] = b.index + 1
            self.stats["examples"] = b.start + b.n_valid
            if self.folder is not None and b.index in self.folder.done:
                if self.folder.stored_digest(b.index) != b.digest:
                    raise ValueError(
                        f"batches: batch {b.index} differs from the data its stored shard was computed "
                        f"from; the loader must yield the same data in the same order to resume "
                        f"(or use a new out= folder)"
                    )
                self.stats["skipped"] += 1
                bar.update(b.n_valid)
                continue
            return (b,) + self._place(b)
        return None

    def _emit(self, b, result, bar):
        expl, rowwise = self._finalize(b, result)
        if self.folder is not None:
            self.folder.write(
                b.index,
                b.start,
                {k: v for k, v in expl._asdict().items() if v is not None},
                rowwise,
                b.digest,
            )
        self.stats["computed"] += 1
        self.stats["computed_examples"] += b.n_valid
        bar.update(b.n_valid)
        return expl

    def _fingerprint(self):
        h = hashlib.blake2b(digest_size=12)
        args = {
            "method": _shards.describe(method_name(self.method), h),
            "model": _shards.describe(_shards.model_digest(self.model), h),
            "batch_size": _shards.describe(self.batch_size, h),
            "eval_batch_size": _shards.describe(self.eval_batch_size, h),
            "key": _shards.describe(None if self.key is None else jax.random.key_data(self.key), h),
            "kwargs": _shards.describe({k: v for k, v in self.kwargs.items()}, h),
        }
        try:
            from importlib.metadata import version

            args["jaxplain_version"] = version("jaxplain")
        except Exception:  # noqa: BLE001 - informative only
            pass
        return h.hexdigest(), args

    def summary(self) -> RunSummary:
        s = self.stats
        rate = s["computed_examples"] / max(s["seconds"], 1e-9)
        return RunSummary(
            self.folder.path,
            s["examples"],
            s["batches"],
            s["computed"],
            s["skipped"],
            s["seconds"],
            rate,
        )
