"""`plan`: what a call of a method will cost, known before it runs.

`plan(method, model, x, **config)` takes the arguments of the call and returns a
`Plan`: model evaluations, chunks and chunk size, peak memory, FLOPs and a
predicted time. It runs nothing of the call but one chunk:

1. The call is traced with `x` abstract (nothing runs, nothing compiles). The
   method's own checks of names, types, shapes and settings run as they do in the
   call, so bad arguments raise what the call would raise. Checks of values (NaN in
   `x`, labels out of range) need the values and happen when the method runs.
2. While it is traced, every chunk loop (`_core.batching`) runs its body as a marked
   nested `jit`, so the traced program shows each chunk with the shapes it really has
   and how many times it runs (`chunk_program.marked_calls`).
3. The innermost marked bodies (the chunks that evaluate the model) are compiled
   together as one program that runs one chunk of each loop, `k` times in a loop
   (`k` an argument); a call without chunk loops is its own single chunk. Its
   `memory_analysis()` is the peak memory (chunks run one after another, so it is
   the call's), its `cost_analysis()` the FLOPs. It runs once to warm up, then with
   `k = 1` and `k = 1 + m`: the difference is the time of a chunk inside a loop, as
   the call runs them, and the rest of `k = 1` is the fixed cost of a call
   (`chunk_program.compile_and_run`). Each loop's chunk gets its share of the chunk
   time by its share of the FLOPs.
4. `seconds` is the fixed cost plus each loop's chunk time times its chunks. Model
   evaluations no chunk covers (a forward pass on all of `x` to resolve
   `target="predicted"`) count at the main chunk's time per evaluation; FLOPs
   likewise. Work that is in no chunk (a final least-squares solve, sorting) is not
   counted.

The evaluation count is the registry's (`registry.Entry.evals`), the number the
result's `n_evals` reports: exact, or an upper bound for methods that stop early.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
from typing import Any, Callable

import jax
import numpy as np

from .._compile import eager, mark_requests
from . import batching, registry, values
from .chunk_program import Marked, compile_and_run, marked_calls
from .chunks import device_batch_size


@dataclasses.dataclass(frozen=True)
class Plan:
    """The cost of one call, predicted by `jaxplain.plan` before the call runs.

    Attributes:
      method: the method's registry name.
      examples: the examples in `x` (its first axis), or None without an `x`.
      evals: model evaluations of the call summed over examples, as the result's
        `n_evals` counts them; None where the method declares no count (metrics that
        call no model, or that call your explanation method).
      evals_bound: `evals` is an upper bound (iterative methods that stop early); then
        `chunks`, `flops` and `seconds` are the worst case too, as the loop stops on
        the values (anchors with the default `max_rounds` predict their full budget).
      chunks: how many chunks the call runs in its main loop (the one that spends the
        most model evaluations).
      chunk_size: model evaluations per chunk of the main loop: rows of the model's
        input batch (for an iterative method, the chunk's examples times their
        evaluation budget).
      peak_bytes: memory of one chunk of each loop compiled as one program,
        arguments + outputs + temporaries, from XLA's `memory_analysis()`; chunks run
        one at a time, so it is the call's peak where the model dominates. Buffers
        kept outside the chunks are not in it: on a cheap model they can be most of
        the call (a 16-feature game, 3000 samples, 4 examples: 0.02 MiB here against
        1.1 MiB for the whole `kernel_shap` call, 37 MiB with `control="cubic"`, which
        keeps every coalition's value). None where the backend does not report it.
      flops: FLOPs of the call: each chunk's, from XLA's `cost_analysis()`, times its
        count, plus the evaluations outside the chunks at the main chunk's rate.
      seconds: predicted time of a warm call (compile excluded): each loop's
        measured chunk time times its chunks, plus the evaluations outside the chunks
        at the main chunk's time per evaluation, plus `overhead_seconds`.
      chunk_seconds: measured time of one chunk of the main loop on the device (run
        inside a loop, as the call runs its chunks).
      overhead_seconds: measured fixed cost of a call beyond its chunks (dispatch,
        buffer allocation).
      compile_seconds: the time `plan` took to compile its chunks (the call compiles
        more: its whole program).
      platform: the platform the chunk ran on ("cpu", "gpu", "tpu").

    >>> import jax.numpy as jnp, jaxplain as jx
    >>> m = jx.testing.linear_model(jnp.ones((4, 1)))
    >>> p = jx.plan("integrated_gradients", m, jnp.ones((3, 4)), target=0, steps=10, batch_size=8)
    >>> p.evals, p.chunks, p.chunk_size
    (36, 4, 8)
    """

    method: str
    examples: int | None
    evals: int | None
    evals_bound: bool
    chunks: int
    chunk_size: int | None
    peak_bytes: int | None
    flops: float | None
    seconds: float | None
    chunk_seconds: float | None
    overhead_seconds: float | None
    compile_seconds: float
    platform: str

    def __str__(self) -> str:
        n = "" if self.examples is None else f" on {self.examples} example(s)"
        if self.evals is None:
            evals = "model evaluations not counted"
        else:
            evals = f"{'at most ' if self.evals_bound else ''}{self.evals:,} model evaluations"
        size = "" if self.chunk_size is None else f" of {self.chunk_size:,} evaluations"
        lines = [f"plan {self.method}{n}: {evals}",
                 f"  {self.chunks:,} chunk(s){size}, peak memory {_bytes(self.peak_bytes)}",
                 f"  {_flops(self.flops)}; predicted {'at most ' if self.evals_bound else ''}"
                 f"{_seconds(self.seconds)} per warm call "
                 f"({_seconds(self.chunk_seconds)} per chunk on {self.platform})"]
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython shows the summary
        p.text(str(self))


def plan(method: str | Callable, *args: Any, **config: Any) -> Plan:
    """The cost of `method(*args, **config)`, known before running it: model evaluations,
    chunks, peak memory, FLOPs and time, from one chunk compiled and run on the device.

    Args:
      method: a registry name (`"integrated_gradients"`) or the public function
        (`jaxplain.integrated_gradients`).
      *args: the call's positional arguments, usually `model, x`.
      **config: the call's keyword arguments (`target=`, `steps=`, `key=`,
        `batch_size=`, ...), exactly as the method takes them.

    Returns:
      A `Plan`; `print` it for a summary.

    Raises:
      ValueError: `method` is not a registered method, or a setting is invalid (the
        method's own check, before anything compiles).
      TypeError: a keyword the method does not take, a missing required argument, or
        an argument of the wrong type (the method's own check).
    """
    if not eager():
        raise TypeError("plan: expected a call outside jax.jit, vmap and grad (it compiles "
                        "and runs one chunk on the device)")
    entry = _entry(method)
    bound = _bind(entry, args, config)
    x = bound.arguments.get("x")
    device = _device_of(x)
    with jax.default_device(device) if device is not None else contextlib.nullcontext():
        _chunk_default(entry, bound, x)
        closed, traced_args, loops = _trace(entry, bound)
        examples = int(np.shape(x)[0]) if _is_array(x) and np.ndim(x) else None
        evals = None if examples is None else entry.total(*bound.args, **bound.kwargs)
        leaves = [m for m in marked_calls(closed, traced_args, loops) if m.leaf]
        platform = jax.devices()[0].platform if device is None else device.platform
        if not leaves:  # no chunk loop: the call is its one chunk
            run = compile_and_run([(closed, list(traced_args))])
            return _plan(entry, examples, evals, run, [1], [evals], [evals or 0], 0, platform)
        run = compile_and_run([(m.eqn.params["jaxpr"], list(m.sources)) for m in leaves])
    runs = [_executions(m, evals) for m in leaves]
    covers = [r * m.covers // max(m.loop.count, 1) for r, m in zip(runs, leaves)]
    main = max(range(len(leaves)), key=lambda i: runs[i] * leaves[i].rows)
    return _plan(entry, examples, evals, run, runs, [m.rows for m in leaves], covers, main,
                 platform)


def _plan(entry: registry.Entry, examples: int | None, evals: int | None, run: Any,
          runs: list[int], rows: list[int | None], covers: list[int], main: int,
          platform: str) -> Plan:
    """The `Plan` from one chunk of each loop run together (`run`): part `i` runs
    `runs[i]` times with `rows[i]` evaluations and covers `covers[i]` of them; the
    evaluations no chunk covers count at the rate of the main part's chunk."""
    seconds = [run.seconds * s for s in run.shares]
    flops = None if run.flops is None else [run.flops * s for s in run.shares]
    size = rows[main]
    outside = max((evals or 0) - sum(covers), 0) / max(size or 1, 1)  # in main chunks' worth
    weights = [r + (outside if i == main else 0) for i, r in enumerate(runs)]
    return Plan(entry.name, examples, evals, entry.evals_bound, runs[main], size, run.peak_bytes,
                None if flops is None else sum(w * f for w, f in zip(weights, flops)),
                run.fixed_seconds + sum(w * t for w, t in zip(weights, seconds)), seconds[main],
                run.fixed_seconds, run.compile_seconds, platform)


def _entry(method: Any) -> registry.Entry:
    if isinstance(method, str):
        return registry.get(method)
    for entry in registry.REGISTRY.values():
        if entry.fn is method:
            return entry
    raise TypeError(f"method: expected a registered method's name or public function (e.g. "
                    f"'integrated_gradients' or jaxplain.integrated_gradients), got {method!r}")


def _bind(entry: registry.Entry, args: tuple, config: dict) -> inspect.BoundArguments:
    """The call's arguments bound to the method's signature, with a message naming the
    method and what it takes when they do not fit."""
    sig = entry.signature
    config = {k: v for k, v in config.items() if k != "progress"}  # plan shows no bar
    params = sig.parameters
    takes = sorted(n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n != "progress")
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(config) - set(params))
        if unknown:
            raise TypeError(f"{entry.name}: unexpected keyword argument(s) {unknown}; it takes "
                            f"{takes}")
    try:
        return sig.bind(*args, **config)
    except TypeError as e:
        raise TypeError(f"{entry.name}: {e} (it takes {list(params)[:2]} and the keywords "
                        f"{takes})") from None


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _device_of(x: Any) -> Any:
    if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
        devices = x.devices()
        return next(iter(devices)) if len(devices) == 1 else None
    return None


def _chunk_default(entry: registry.Entry, bound: inspect.BoundArguments, x: Any) -> None:
    """The public call's default chunk size on accelerators (`chunks.device_batch_size`),
    which a traced call does not pick itself: set into `bound` when it applies. (There,
    as in the call, it compiles the model's memory probe once per architecture.)"""
    params = entry.signature.parameters
    if "batch_size" not in params or bound.arguments.get("batch_size") is not None:
        return
    model = bound.arguments.get("model")
    if _is_array(x) and model is not None:
        rows = device_batch_size(model, x)
        if rows is not None:
            bound.arguments["batch_size"] = rows


def _trace(entry: registry.Entry, bound: inspect.BoundArguments):
    """`(program, its arguments, chunk loops)`: the call traced with `x` abstract and
    its chunk bodies marked; device checks of values are dropped (nothing runs)."""
    x = bound.arguments.get("x")
    abstract = _is_array(x)

    def call(*xs):
        b = entry.signature.bind(*bound.args, **bound.kwargs)
        if abstract:
            b.arguments["x"] = xs[0]
        out = entry.fn(*b.args, **b.kwargs)
        return [leaf for leaf in jax.tree.leaves(out) if isinstance(leaf, jax.Array)]

    specs = [jax.ShapeDtypeStruct(np.shape(x), jax.dtypes.canonicalize_dtype(x.dtype))] \
        if abstract else []
    with mark_requests(), values.unchecked():
        closed = jax.make_jaxpr(call)(*specs)
    return closed, [x] if abstract else [], batching.LOOPS


def _executions(mark: Marked, evals: int | None) -> int:
    """How many times the body runs per call; inside a `while` loop (a count the values
    decide), as many as the evaluation budget allows."""
    if mark.runs is not None:
        return mark.runs
    return max(1, math.ceil((evals or mark.rows) / mark.rows))


def _bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _flops(f: float | None) -> str:
    if f is None:
        return "FLOPs unknown"
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if f >= scale:
            return f"{f / scale:.2f} {unit}"
    return f"{f:.0f} FLOP"


def _seconds(s: float | None) -> str:
    if s is None:
        return "unknown"
    return f"{s:.3g} s" if s >= 1 else f"{s * 1e3:.3g} ms"
