"""One case on one model: build it, time jaxplain against its references and the peers,
measure memory, check agreement.

The references of jaxplain's time, all timed in the same interleaved rounds
(`harness.measure`, the `keep` block):

- `limit`: the method's model evaluations as ONE jitted batch (`limits`);
- `limit_chunked`: the same evaluations in chunks of jaxplain's default
  `batch_size` (`batching.default_batch_size()`: cache-sized on CPU, larger on an
  accelerator), when there are more than one chunk's worth (else it is the
  one-batch limit, and the record says so);
- `limit_dispatch`: separate jitted calls of one chunk each (from
  `DISPATCH_MIN_CHUNKS` chunks up);
- `jaxplain_program`: the method compiled whole, as under a caller's `jax.jit`;
- `jaxplain_rewrites_off`: the same public call with the CPU rewrites off
  (`jaxplain.config.override(cpu_rewrites="0")`), wherever they are on for the
  backend (`JAXPLAIN_CPU_REWRITES=auto` on CPU): what the rewrites buy.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain._compile import config, default_platform, jit, rewrites_for
from jaxplain._core import batching

from . import harness as H
from . import limits as Li
from . import memory as Me
from .cases import base as B
from .precision import full_precision as full_precision

DISPATCH_MIN_CHUNKS = 4
"""`limit_dispatch` (one jitted call per default chunk) is timed from this many chunks
up; below it the calls are too few to differ from `limit_chunked`. It was timed at
64 and 128 per call; 64 was the faster in 19 of 26 cases, and the second size cost
about 50 s of a 980 s full run."""
PROGRAM_TIMED_BELOW_S = 0.05
"""The compiled-whole program is timed on cases whose call is under this: above it
the public call's fraction of a millisecond of checks and dispatch is under 1%,
and timing it cost about 45 s of a full run."""
REWRITES_TOL = 1e-4
"""Largest relative difference accepted between jaxplain's values with the CPU rewrites
off and on (float32 round-off, summed over a method's evaluations)."""
MAX_KINK_SHARE = 0.25
"""A rewrites check may set aside one image in this share of a batch of 4 or more.
Measured: integrated gradients (small avg-pool model, 16 images, 50 trapezoid nodes) had
one image off by 1.8e-3 and 15 within 2.2e-7; its saliency differed at one node
(alpha = 1/7) by 0.14, a ReLU input within rounding of 0 taking different sides in the
two programs, as between XLA and PyTorch (`cases.gradients._ig_agreement`)."""


class LazyOutputs(dict):
    """Peer outputs computed on first access (for agreement checks)."""

    def __init__(self, fns: dict):
        super().__init__()
        self._fns = fns

    def __missing__(self, k):
        self[k] = self._fns[k]()
        return self[k]

    def __iter__(self):
        return iter(self._fns)

    def keys(self):
        return self._fns.keys()


def rewrites_off(call: Callable[[], Any]) -> Callable[[], Any] | None:
    """`call` with the CPU rewrites off, or None where they are off already (GPU/TPU under
    `auto`, or `JAXPLAIN_CPU_REWRITES=0`)."""
    if not rewrites_for(default_platform()):
        return None

    def off():
        with config.override(cpu_rewrites="0"):
            return call()

    return off


def declared(entry) -> Callable:
    """The method's public function, noting the model evaluations per example that the
    registry declares for its first call (`fn.declared["per_example"]`)."""
    seen: dict[str, int | None] = {}

    @functools.wraps(entry.fn)
    def fn(*args, **kwargs):
        if "per_example" not in seen:
            seen["per_example"] = entry.per_example(*args, **kwargs)
        return entry.fn(*args, **kwargs)

    fn.declared = seen
    return fn


def _limit(case: B.Case, ctx: B.Ctx, bench: B.Bench, n: int):
    """The physical limit for `n` model evaluations: `(fn, (jit_fn, args))`."""
    model = ctx.model
    if case.kind == "fwdbwd_to_layer":
        xd, td = jnp.asarray(bench.x), jnp.asarray(bench.target)
        f, h, p = ctx.features_fn, ctx.head_fn, ctx.variables
        fn = lambda: Li.limit_forward_backward_to_layer(f, h, p, xd, td)
        return fn, (lambda p_, x_: Li._fwd_bwd_to(f, h, p_, x_, td), (p, xd))
    inputs = Li.limit_inputs(bench.x, n)
    td = _limit_targets(bench, n)
    if case.kind == "fwd":
        fn = lambda: Li.limit_forward(model, inputs, td)
        return fn, (lambda m, z: Li._select(m(z), td), (model, inputs))
    n_out = bench.n_images if n % bench.n_images == 0 else 1
    fn = lambda: Li.limit_forward_backward(model, inputs, td, n_out=n_out)
    return fn, (lambda m, z: Li._fwd_bwd(m, z, td, n_out), (model, inputs))


def _limit_targets(bench: B.Bench, n: int) -> jax.Array:
    return jnp.asarray(np.asarray(bench.target)[(np.arange(n) * bench.n_images) // n])


def references(case: B.Case, ctx: B.Ctx, bench: B.Bench, n: int, chunk: int) -> dict:
    """The limits of `n` evaluations to time with jaxplain: one batch, chunked, dispatched."""
    out = {}
    if case.kind == "fwdbwd_to_layer":
        return out
    grad = case.kind == "fwdbwd"
    if n > chunk:
        inputs, td = Li.limit_inputs(bench.x, n), _limit_targets(bench, n)
        out["limit_chunked"] = lambda: Li.limit_chunked(ctx.model, inputs, td, chunk=chunk,
                                                        grad=grad)
    if n >= DISPATCH_MIN_CHUNKS * chunk:
        # A third reference: separate jitted calls of jaxplain's default chunk.
        inputs, td = Li.limit_inputs(bench.x, n), _limit_targets(bench, n)
        parts = [(inputs[s : s + chunk], td[s : s + chunk]) for s in range(0, n, chunk)]
        out["limit_dispatch"] = functools.partial(Li.limit_dispatch, ctx.model, parts, grad=grad)
    return out


def program(name: str, bench: B.Bench, log: Callable) -> tuple[Any, Callable | None]:
    """The method compiled whole, as under a caller's jit: `(compiled, timed call or None)`.

    Its XLA buffer sizes are the memory figure; on calls under `PROGRAM_TIMED_BELOW_S`
    it is also timed next to the public call, to show what the call adds to its
    program (checks, dispatch)."""
    if bench.memory is None:
        return None, None
    fn, args = bench.memory
    try:
        compiled = jit(fn).lower(*args).compile()
        run_program = functools.partial(compiled, *args)
        _, program_s, _ = H.first_call(run_program)
    except Exception as e:  # noqa: BLE001 - a method a caller cannot jit: no program
        log(f"  {name}: not compiled whole ({type(e).__name__})")
        return None, None
    return compiled, run_program if program_s < PROGRAM_TIMED_BELOW_S else None


def run_case(case: B.Case, entry, ctx: B.Ctx, repeats: int, budget_s: float | None = None,
             min_timed_s: float = 0.0, log: Callable = print) -> dict:
    """Builds `case` for the registry `entry` on `ctx` and measures it (module docstring)."""
    phases: dict[str, float] = {}  # where the case's wall time went (the full run's budget)
    t0 = time.perf_counter()
    fn = declared(entry)
    bench = case.build(ctx, fn)
    out, first_s, compile_s = H.first_call(bench.jaxplain)
    reported = getattr(out, "n_evals", None)
    reported = int(np.sum(np.asarray(reported))) if reported is not None else None
    n = reported if (bench.reported_evals and reported) else bench.n_evals
    chunk = batching.default_batch_size()
    limit_fn, limit_mem = _limit(case, ctx, bench, n)
    contenders = {"jaxplain": bench.jaxplain, "limit": limit_fn,
                  **references(case, ctx, bench, n, chunk)}
    compiled, run_program = program(case.name, bench, log)
    if run_program is not None:
        contenders["jaxplain_program"] = run_program
    off = rewrites_off(bench.jaxplain)
    if off is not None:
        contenders["jaxplain_rewrites_off"] = off
    keep = tuple(contenders)
    phases["setup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    timings = H.measure({**contenders, **bench.peers}, repeats, budget_s=budget_s, keep=keep,
                        min_timed_s=min_timed_s, capped=("jaxplain_rewrites_off",))
    phases["timing"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = collect(timings, first_s, compile_s, chunk, n, bench)
    measure_memory(res, compiled, (limit_fn, limit_mem), bench)
    phases["memory"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    agreement = check_agreement(case.name, bench, out, off)
    phases["agreement"] = time.perf_counter() - t0
    per = fn.declared.get("per_example")
    return {"case": case.name, "method": entry.name, "family": entry.family,
            "model": ctx.spec.name, "kind": case.kind, "n_images": bench.n_images,
            "n_evals": n, "n_evals_reported": reported,
            "n_evals_declared": None if per is None else per * bench.n_images,
            "settings": bench.settings, **res, "agreement": agreement, "note": bench.note,
            "phases_s": phases}


def collect(timings: dict, first_s: float, compile_s: float, chunk: int, n: int,
            bench: B.Bench) -> dict:
    """The timing fields and ratios of a result from `harness.measure`'s output."""
    jt, lt = timings.pop("jaxplain"), timings.pop("limit")
    lct = timings.pop("limit_chunked", None)
    if lct is not None:
        lct["chunk"] = chunk
    elif n <= chunk and "median_s" in lt:  # one chunk holds them all: the one-batch program
        lct = {"chunk": chunk, "same_as": "limit"}
    lbt = timings.pop("limit_dispatch", None)
    if lbt is not None:
        lbt["batch"] = chunk
    pgt = timings.pop("jaxplain_program", None)
    off = timings.pop("jaxplain_rewrites_off", None)
    jt["first_s"], jt["compile_s"] = first_s, compile_s
    peers = timings
    ratios, best = H.compute_ratios(jt, lt, peers)
    ratios["jaxplain/limit_chunked"] = (ratios["jaxplain/limit"] if lct and lct.get("same_as")
                                        else H.ratio(jt, lct))
    ratios["jaxplain/limit_dispatch"] = H.ratio(jt, lbt)
    ratios["program/limit"] = H.ratio(pgt, lt)
    ratios["rewrites_off/on"] = H.ratio(off, jt)
    for name, k in bench.peer_evals.items():
        if name in peers:
            peers[name]["n_evals"] = k
    return {"jaxplain": jt, "limit": lt, "limit_chunked": lct, "limit_dispatch": lbt,
            "jaxplain_program": pgt, "jaxplain_rewrites_off": off, "peers": peers,
            "best_peer": best, "ratios": ratios}


def measure_memory(res: dict, compiled: Any, limit: tuple, bench: B.Bench) -> None:
    """Memory, untimed: XLA accounting for jitted code, host RSS growth for everyone timed,
    and the CUDA peak of the best peers when torch runs on a GPU."""
    limit_fn, (limit_jit, limit_args) = limit
    jt, lt = res["jaxplain"], res["limit"]
    if compiled is not None:
        jt["xla_mb"] = Me.compiled_memory_mb(compiled)
    lt["xla_mb"] = Me.xla_memory_mb(limit_jit, *limit_args)
    jt["rss_peak_mb"] = Me.peak_rss_growth(bench.jaxplain)
    lt["rss_peak_mb"] = Me.peak_rss_growth(limit_fn)
    for name in res["best_peer"].values():
        res["peers"][name]["rss_peak_mb"] = Me.peak_rss_growth(bench.peers[name])
        cuda = Me.cuda_peak_mb(bench.peers[name])
        if cuda is not None:
            res["peers"][name]["cuda_peak_mb"] = cuda


def check_agreement(name: str, bench: B.Bench, out: Any, off: Callable | None) -> list[dict]:
    """The case's agreement checks at full precision on both sides (`full_precision`), and
    jaxplain's values with the CPU rewrites off against on; errors are reported, not raised."""
    checks = []
    with full_precision():
        try:
            if default_platform() != "cpu":  # recomputed without TF32
                out = H.block(bench.jaxplain())
            values = np.asarray(getattr(out, "values", out))
            if bench.agreement is not None:
                checks += bench.agreement(values, LazyOutputs(bench.peers))
        except Exception as e:  # noqa: BLE001 - report, do not stop the run
            checks.append({"check": name, "error": f"{type(e).__name__}: {e}"[:300]})
        try:
            if off is not None:
                theirs = np.asarray(getattr(H.block(off()), "values", None))
                check = rewrites_check(name, theirs, np.asarray(getattr(out, "values", out)))
                if not check["pass"] and bench.rewrite_ties is not None:
                    ties = bench.rewrite_ties(REWRITES_TOL)
                    check.update(ties, steps=bench.settings.get("steps"))
                    check["pass"] = ties["ties_pass"]
                checks.append(check)
        except Exception as e:  # noqa: BLE001
            checks.append({"check": f"{name} rewrites off == on", "error":
                           f"{type(e).__name__}: {e}"[:300]})
    return checks


def rewrites_check(name: str, off: np.ndarray, on: np.ndarray) -> dict:
    """jaxplain's values with the CPU rewrites off vs on, judged at `REWRITES_TOL`.

    Above it, the check is examined image by image: in a batch of 4 or more it passes
    when one image is off (at most `MAX_KINK_SHARE` of them: a gradient discontinuity
    at one of its evaluations) and the others agree. A one-image case gets no allowance.
    """
    check = B.verdict(f"{name} rewrites off == on", "jaxplain, JAXPLAIN_CPU_REWRITES=0",
                      B.rel_err(off, on), REWRITES_TOL, kind="rewrites")
    if check["pass"] or off.shape != on.shape or len(on) < 4:
        return check
    a, b = np.asarray(off, np.float64), np.asarray(on, np.float64)
    scale = max(float(np.max(np.abs(b))), 1e-30)
    per = np.max(np.abs(a - b).reshape(len(b), -1), axis=1) / scale
    bad = per > REWRITES_TOL
    check.update(off_images=int(bad.sum()),
                 rel_err_other_images=float(np.max(per[~bad], initial=0)))
    check["pass"] = bool(bad.sum() == 1 and bad.mean() <= MAX_KINK_SHARE)
    return check
