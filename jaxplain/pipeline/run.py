"""One dataset run: the loop behind `explain_dataset` and `explain_to_shards`.

The run is validated when it is built (before the loader starts or anything
compiles) and runs lazily. Batch `i + 1` is sent to the device before the results
of batch `i` are fetched, so the host and the device overlap.
"""

from __future__ import annotations

import collections
import hashlib
import os
import time
from typing import Any, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from .._core import validate as V
from .._core.models import as_model
from .._core.types import Explanation
from . import shards as _shards
from .config import RunConfig, RunSummary
from .host import HostBatch, HostData, report_non_finite
from .progress import Progress
from .stream import (
    DIRECT,
    TRACE_ERRORS,
    Background,
    all_finite,
    method_name,
    resolve_method,
    pytree_kwargs,
    runner,
    takes,
)


class Run:
    """State of one dataset run (validated eagerly, run lazily).

    Args:
      method, model, batches: as in `explain_dataset`.
      config: the run's `RunConfig`.
      method_kwargs: the keywords passed to every call of `method`.
      out: a results folder (`explain_to_shards`), or None to stream.
    """

    def __init__(
        self,
        method: Any,
        model: Any,
        batches: Iterable | Any,
        config: RunConfig,
        method_kwargs: dict,
        out: str | os.PathLike | None = None,
    ):
        self.config = config
        self.method = resolve_method(method)
        self.model = as_model(model)
        self.kwargs, self.key = self._method_kwargs(method_kwargs)
        self.host = HostData(batches, config, self.kwargs, self.model)
        self.dynamic = pytree_kwargs(self.kwargs)  # traced arguments of the runner
        if config.mesh is not None:
            replicated = NamedSharding(config.mesh, P())
            self.model = jax.device_put(self.model, replicated)
            self.dynamic = jax.device_put(self.dynamic, replicated)
            if self.key is not None:
                self.key = jax.device_put(self.key, replicated)
        self.folder = None
        if out is not None:
            fingerprint, arguments = self._fingerprint()
            # JAX's multi-process runtime: batch i belongs to process i % processes
            self.process, self.processes = jax.process_index(), jax.process_count()
            self.folder = _shards.ShardFolder(
                _shards.process_folder(out, self.process, self.processes), fingerprint,
                arguments, process=(self.process, self.processes))
            self.host.saved = self.folder.done
        self.runner = None
        self.progress: Progress | None = None
        self.stats = dict(computed=0, skipped=0, examples=0, batches=0, seconds=0.0)

    def _method_kwargs(self, method_kwargs: dict) -> tuple[dict, Any]:
        """The method's keywords, checked against its signature, and the key taken out."""
        if "batch_size" in method_kwargs:
            raise TypeError(
                "batch_size: is the number of examples per call here; pass the method's "
                "own chunk size as eval_batch_size="
            )
        for reserved in ("model", "x"):
            if reserved in method_kwargs:
                raise TypeError(
                    f"{reserved}: is passed by the pipeline; do not give it as a keyword"
                )
        kwargs = dict(method_kwargs)
        for name in kwargs:  # a typo fails now, not after the loader started
            if not takes(self.method, name):
                raise TypeError(f"{name}: {method_name(self.method)} takes no argument {name!r}")
        key = kwargs.pop("key", None)
        return kwargs, None if key is None else V.check_key(key)

    # -- the loop ----------------------------------------------------------------------------
    def stream(self) -> Iterator[Explanation]:
        """Yields the results of each batch in order (NumPy arrays, padding dropped)."""
        loop = self._loop()
        try:
            for _, expl in loop:
                yield expl
        finally:
            loop.close()  # stops the loader thread now when the caller stops early

    def write_all(self) -> None:
        """Computes and writes every batch that is not saved yet, then completes the folder."""
        for _ in self._loop():
            pass
        self.folder.finish(self.stats["batches"], self.stats["examples"])

    def _loop(self) -> Iterator[tuple[HostBatch, Explanation]]:
        t0 = time.perf_counter()
        self.progress = self._new_progress()
        host = Background(self.host.batches(), self.config.prefetch)
        pending: collections.deque = collections.deque()
        try:
            nxt = self._next_placed(host)
            while nxt is not None:
                b, x, t = nxt
                pending.append((b, self._dispatch(b, x, t)))  # asynchronous: returns at once
                nxt = self._next_placed(host)  # batch i + 1 is sent while batch i computes
                if len(pending) > 1:
                    yield self._emit(*pending.popleft())  # results of i - 1 come back
            while pending:
                yield self._emit(*pending.popleft())
        except KeyboardInterrupt:
            if self.folder is not None:
                self._save_pending(pending)
            raise
        finally:
            host.close()
            self.progress.close()
            self.stats["seconds"] = time.perf_counter() - t0

    def _new_progress(self) -> Progress:
        done = () if self.folder is None else sorted(self.folder.done)
        return Progress(
            total=self.host.total,
            initial=sum(self.host.expected_rows(i) for i in done),
            enabled=self.config.progress,
            desc=getattr(self.method, "__name__", "explain"),
        )

    def _save_pending(self, pending: collections.deque) -> None:
        """On Ctrl-C: write the batches already running on the device (a second Ctrl-C
        stops this; a batch that fails is left for the next run)."""
        try:
            while pending:
                self._emit(*pending.popleft())
        except (KeyboardInterrupt, Exception):  # noqa: BLE001 - recomputed when resumed
            pass

    def _next_placed(self, host: Background):
        t = time.perf_counter()
        for b in host:
            self.stats["batches"] = b.index + 1
            self.stats["examples"] = b.start + b.n_valid
            if self.folder is not None and b.index % self.processes != self.process:
                continue  # another process's batch
            if self.folder is None or b.index not in self.folder.done:
                return (b,) + self._place(b)
            if self.folder.stored_digest(b.index) != b.digest:
                raise ValueError(
                    f"batches: batch {b.index} differs from the data its stored shard was computed "
                    f"from; the loader must yield the same data in the same order to resume "
                    f"(or use a new out= folder)"
                )
            self.stats["skipped"] += 1
            now = time.perf_counter()
            self.progress.skipped(b.n_valid, self.host.expected_rows(b.index), now - t)
            t = now
        return None

    # -- device ------------------------------------------------------------------------------
    def _place(self, b: HostBatch):
        mesh = self.config.mesh
        sharding = None if mesh is None else NamedSharding(mesh, P("batch"))
        x = jax.device_put(b.x, sharding)
        t = None if b.target is None else jax.device_put(b.target, sharding)
        return x, t

    def _dispatch(self, b: HostBatch, x, t):
        if self.runner is None:
            self.runner = runner(
                self.method,
                self.kwargs,
                self.config,
                stochastic=self.key is not None,
                has_target=t is not None,
            )
        if self.runner is not DIRECT:
            try:
                with V.values_checked(x):
                    return self.runner(self.model, x, t, self.key, np.int32(b.start),
                                       self.dynamic)
            except TRACE_ERRORS as e:
                if self.config.mesh is not None or self.key is not None:
                    raise TypeError(
                        f"method: {method_name(self.method)} cannot run under jax.jit "
                        f"({type(e).__name__}); the pipeline needs that for devices=/mesh= and "
                        f"for stochastic methods"
                    ) from e
                self.runner = DIRECT
        kwargs = dict(self.kwargs)  # a method that needs concrete inputs: call it as is
        if t is not None:
            kwargs["target"] = t
        if self.config.eval_batch_size is not None:
            kwargs["batch_size"] = self.config.eval_batch_size
        with V.values_checked(x):
            return self.method(self.model, x, **kwargs)

    def _emit(self, b: HostBatch, result) -> tuple[HostBatch, Explanation]:
        expl, rowwise = self._finalize(b, result)
        if self.folder is not None:
            fields = {k: v for k, v in expl._asdict().items() if v is not None}
            self.folder.write(b.index, b.start, fields, rowwise, b.digest)
        self.stats["computed"] += 1
        self.progress.computed(b.n_valid)
        return b, expl

    def _finalize(self, b: HostBatch, result) -> tuple[Explanation, list[str]]:
        if isinstance(result, (jax.Array, np.ndarray)):
            result = Explanation(result)
        if not isinstance(result, Explanation):
            raise TypeError(
                f"method: expected it to return an Explanation or an array, got "
                f"{type(result).__name__}"
            )
        rows = self.config.rows
        fields, rowwise = {}, []
        for name, v in zip(Explanation._fields, jax.device_get(result)):
            if v is None:
                continue
            v = np.asarray(v)
            if v.ndim >= 1 and v.shape[0] == rows:
                v = v[: b.n_valid]
                rowwise.append(name)
            fields[name] = v
        if "values" not in rowwise:
            raise ValueError(
                f"method: expected values with one row per example ({rows}), got "
                f"shape {fields['values'].shape}"
            )
        if self.config.nan_policy != "ignore":
            self._check_results(b, fields["values"])
        return Explanation(**fields), rowwise

    def _check_results(self, b: HostBatch, v: np.ndarray) -> None:
        # only the values: diagnostics (stderr of tiny samples, ...) may be NaN by design
        if v.dtype.kind != "f" or all_finite(v):
            return
        report_non_finite(
            v, self.config.nan_policy, stacklevel=4, first_row=b.start,
            message=lambda n, rows: (
                f"method: returned NaN/inf for {n} examples of batch {b.index} "
                f"(examples {rows}); the model outputs or their gradients are not finite "
                f"there. Pass nan_policy='ignore' to keep such results"))

    # -- the folder --------------------------------------------------------------------------
    def _fingerprint(self) -> tuple[str, dict]:
        h = hashlib.blake2b(digest_size=12)
        key = None if self.key is None else jax.random.key_data(self.key)
        args = {
            "method": _shards.describe(method_name(self.method), h),
            "model": _shards.describe(_shards.model_digest(self.model), h),
            "batch_size": _shards.describe(self.config.batch_size, h),
            "eval_batch_size": _shards.describe(self.config.eval_batch_size, h),
            "key": _shards.describe(key, h),
            "kwargs": _shards.describe(dict(self.kwargs), h),
        }
        try:
            from importlib.metadata import version

            args["jaxplain_version"] = version("jaxplain")
        except Exception:  # noqa: BLE001 - informative only
            pass
        return h.hexdigest(), args

    def interrupted_message(self) -> str:
        """One line for Ctrl-C: what is saved and how to resume."""
        saved = len(self.folder.done)
        total = self.host.total
        of = "" if total is None else f" of {-(-total // self.config.batch_size)}"
        return (
            f"explain_to_shards interrupted: {saved}{of} batches are saved in "
            f"{self.folder.path!r} ({self.stats['computed']} computed in this call). "
            f"Run the same call again to resume; saved batches are skipped."
        )

    def summary(self) -> RunSummary:
        s = self.stats
        return RunSummary(
            self.folder.path,
            s["examples"],
            s["batches"],
            s["computed"],
            s["skipped"],
            s["seconds"],
            self.progress.rate,
        )
