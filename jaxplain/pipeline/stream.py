"""Streaming helpers of the pipeline: the jitted runner, the loader thread, re-chunking.

The runner is one `jax.jit` per (method, configuration, device layout), cached
across calls, so a dataset (and the next dataset with the same shapes) compiles once.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import inspect
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from .._compile import jit
from .._core import registry
from . import shards as _shards
from .._core import validate as V
from .._core import batching
from .._core.types import Explanation

if TYPE_CHECKING:
    from .config import RunConfig


def resolve_method(method: Any) -> Callable:
    if isinstance(method, str):
        return registry.get(method).fn
    if not callable(method):
        V.fail(
            "method",
            "a function method(model, x, **kwargs) or a method name",
            type(method).__name__,
            TypeError,
        )
    return method


def method_name(method: Callable) -> str:
    return f"{getattr(method, '__module__', '?')}.{getattr(method, '__qualname__', repr(method))}"


def is_array(a: Any) -> bool:
    return isinstance(a, (np.ndarray, jax.Array)) or hasattr(a, "__array__")


# ---- the jitted runner --------------------------------------------------------------------

DIRECT = object()
TRACE_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)
RUNNERS: "collections.OrderedDict[tuple, Callable]" = collections.OrderedDict()


def takes(method: Callable, name: str) -> bool:
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _as_explanation(result: Any) -> Explanation:
    if isinstance(result, Explanation):
        return result
    if isinstance(result, (jax.Array, np.ndarray)) or hasattr(result, "shape"):
        return Explanation(result)
    raise TypeError(
        f"method: expected it to return an Explanation or an array, got {type(result).__name__}"
    )


def pytree_kwargs(kwargs: dict) -> dict:
    """The keywords whose values are pytree objects holding arrays (a trained explainer
    for `amortised_shap`, a `Model`): the runner takes them as traced arguments, so
    their weights are neither baked into the program nor a reason to compile again."""
    out = {}
    for name, v in kwargs.items():
        if v is None or isinstance(v, (np.ndarray, jax.Array, list, tuple, dict, str, bytes,
                                       int, float, complex)):
            continue
        leaves = jax.tree.leaves(v)
        if leaves and leaves != [v] and all(isinstance(a, (np.ndarray, jax.Array))
                                            for a in leaves):
            out[name] = v
    return out


def runner(
    method: Callable, kwargs: dict, config: RunConfig, *, stochastic: bool, has_target: bool
):
    """One jitted function per (method, config, layout), cached across calls.

    `kwargs` are the method's keywords (without key and target); the layout (mesh,
    device batch rows) and the method's chunk size come from `config`. Keywords
    that are pytree objects (`pytree_kwargs`) are the runner's last argument, a dict
    of them: traced, and only their structure and shapes key the cache.

    Deterministic methods run on the (local) batch as given. Stochastic methods run
    one vmapped lane per example, keyed by `fold_in(key, global example index)`,
    so each example's randomness is independent of batch size, device count and
    resume point; the lanes share the `eval_batch_size` budget (per device).
    With a mesh, the body runs under `shard_map`: each device explains its own
    rows, with no communication.
    """
    mesh, eval_batch_size, rows = config.mesh, config.eval_batch_size, config.rows
    dynamic = pytree_kwargs(kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k not in dynamic}
    h = hashlib.blake2b(digest_size=16)
    _shards.describe(kwargs, h)
    layout = tuple((k, jax.tree.structure(v), tuple((np.shape(a), np.dtype(a.dtype))
                                                    for a in jax.tree.leaves(v)))
                   for k, v in sorted(dynamic.items()))
    cache_key = (method, mesh, h.hexdigest(), layout, eval_batch_size, stochastic, has_target,
                 rows)
    if cache_key in RUNNERS:
        RUNNERS.move_to_end(cache_key)
        return RUNNERS[cache_key]
    takes_bs = takes(method, "batch_size")
    n_dev = 1 if mesh is None else int(mesh.shape["batch"])
    local_rows = rows // n_dev

    def body(model, x, t, key, start, dyn=None):
        kw = dict(kwargs, **(dyn or {}))
        if not stochastic:
            if t is not None:
                kw["target"] = t
            if eval_batch_size is not None and takes_bs:
                kw["batch_size"] = eval_batch_size
            return _as_explanation(method(model, x, **kw))
        offset = start + (0 if mesh is None else jax.lax.axis_index("batch") * local_rows)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
            offset + np.arange(local_rows, dtype=np.int32)
        )
        if takes_bs:
            kw["batch_size"] = max(
                1, (eval_batch_size or batching.default_batch_size()) // local_rows
            )

        def lane(x1, t1, k1):
            kw1 = dict(kw, key=k1)
            if t1 is not None:
                kw1["target"] = t1[None]
            return _as_explanation(method(model, x1[None], **kw1))

        out = jax.vmap(lane)(x, t, keys)
        return jax.tree.map(
            lambda a: (
                a.reshape((local_rows,) + a.shape[2:]) if a.ndim >= 2 and a.shape[1] == 1 else a
            ),
            out,
        )

    if mesh is None:
        fn = jit(body)
    else:
        row = P("batch")

        def sharded(model, x, t, key, start, dyn=None):
            specs = (P(), row, None if t is None else row, None if key is None else P(), P(),
                     P())
            return jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=row, check_vma=False)(
                model, x, t, key, start, dyn or {}
            )

        fn = jit(sharded)
    RUNNERS[cache_key] = fn
    while len(RUNNERS) > 32:
        RUNNERS.popitem(last=False)
    return fn


# ---- helpers ------------------------------------------------------------------------------


def all_finite(a: np.ndarray) -> bool:
    return bool(np.isfinite(a).all())


def take_rows(parts: list[np.ndarray], n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The first `n` rows of the concatenation of `parts`, and the rest (copies only if needed)."""
    if parts[0].shape[0] == n:
        return parts[0], parts[1:]
    if parts[0].shape[0] > n:
        return parts[0][:n], [parts[0][n:]] + parts[1:]
    out, k, rest = [], 0, list(parts)
    while k < n:
        p = rest.pop(0)
        need = n - k
        if p.shape[0] > need:
            out.append(p[:need])
            rest.insert(0, p[need:])
            k = n
        else:
            out.append(p)
            k += p.shape[0]
    return np.concatenate(out, axis=0), rest


def pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """Pads axis 0 to `rows` by repeating the last row (a valid input, unlike zeros for some models)."""
    if a.shape[0] == rows:
        return a
    reps = np.repeat(a[-1:], rows - a.shape[0], axis=0)
    return np.concatenate([a, reps], axis=0)


class Background:
    """Iterates `it` in a daemon thread, `size` items ahead; errors re-raise in the consumer."""

    _END = object()

    def __init__(self, it: Iterator, size: int):
        self._q: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(it,), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, it):
        try:
            for item in it:
                if not self._put((item, None)):
                    return
            self._put((self._END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put((None, e))

    def __iter__(self):
        return self

    def __next__(self):
        item, err = self._q.get()
        if err is not None:
            self._stop.set()
            raise err
        if item is self._END:
            self._stop.set()
            raise StopIteration
        return item

    def close(self):
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        self._thread.join(timeout=5)
