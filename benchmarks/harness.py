"""Timing protocol and the ratios computed from it.

Measurement protocol (the same for jaxplain, the limit and every peer):

1. First call, timed alone: trace + compile + run for JAX (`first_s`), with the
   XLA compile seconds read from JAX's monitoring events (`compile_s`).
2. One more warm-up call each. A peer's non-default configuration whose warm
   call is over `SCREEN` times its group's fastest gets one more call; when the
   faster of its two is still over, it is reported with that time
   (`screened_out`) and not timed further. (On one warm call alone, shap's
   `l1_reg=False` and lime's `batch_size=250` were screened out at 1.9x and 2.2x
   in one run although they had been within 13% of the best in the run before.)
3. `repeats` timed calls each, in `PASSES` passes over blocks: jaxplain and
   its references (`keep`, JAX programs on one thread pool) form one block in
   which they run in interleaved rounds, in a rotated order; every peer
   configuration is a block of its own. Each block starts with a `SETTLE_S`
   pause (the previous library's idle threads stop spinning) and then
   `REWARM_S` of untimed calls of its contenders, since a 2-core VM runs the
   next ~30 ms of work up to 2x slower after its cores idle. The passes rotate
   the block order, so drifting load from other processes hits everyone alike.
   (Interleaving single calls with a pause before each peer call, as before,
   timed the JAX calls of the peer's rounds at 2x those of the later rounds:
   saliency 10-12 ms vs 4.2 ms in one case, with medians between the modes.)
   Reported: the median (`median_s`), min and all times. Every contender runs
   more calls when it is cheap, up to `MAX_ROUNDS` (`PEER_MAX_ROUNDS` for
   peers), until it has about `MIN_TIMED_S` of timed calls: a median of 4 calls
   of 15 ms moved jaxplain / limit by +-10% between runs, and Captum's saliency
   (4 calls of 9-54 ms) read 0.90x in one run and 3.17x in the next.
4. Peak memory in a separate, untimed call: host RSS growth sampled by a thread
   (psutil), and for jitted JAX code the XLA buffer sizes from
   `compiled.memory_analysis()` (temporaries + outputs + arguments); for
   jaxplain, of the method compiled whole (`benchmarks.execute`), the program that
   is also timed on cheap calls.

Memory is measured by `memory`, the physical limit built by `limits`, the
record written by `record`.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax

# ---- timing ---------------------------------------------------------------------------


def block(out: Any) -> Any:
    """Waits for the results of a call: JAX arrays, and torch tensors on a GPU (CUDA runs
    asynchronously, like JAX); NumPy results and CPU tensors are computed already."""
    leaves = jax.tree.leaves(out)
    arrays = [leaf for leaf in leaves if isinstance(leaf, jax.Array)]
    if arrays:
        jax.block_until_ready(arrays)
    if any(getattr(leaf, "is_cuda", False) for leaf in leaves):
        sys.modules["torch"].cuda.synchronize()
    return out


_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def first_call(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Runs `fn` once: `(result, seconds, XLA compile seconds spent in the call)`."""
    seconds = [0.0]

    def listener(event, duration, **kwargs):
        if event == _COMPILE_EVENT:
            seconds[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        t0 = time.perf_counter()
        out = block(fn())
        first = time.perf_counter() - t0
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return out, first, seconds[0]


MIN_TIMED_S = 0.6
"""Timed seconds jaxplain and its limit collect in a benchmark run (protocol, step 3)."""
MAX_ROUNDS = 30
"""Cap on the timed calls of a cheap contender in `keep`, jaxplain and its limits
(protocol, step 3): 30 calls of a 10 ms call take under a second."""
PEER_MAX_ROUNDS = 15
"""The same cap for peers."""


CAPPED_MIN_ROUNDS = 2
"""Fewest timed calls of a `capped` contender (`measure`)."""

SCREEN = 1.3
"""A peer's non-default configuration whose warm call is more than this times its
group's fastest warm call is not timed further (protocol, step 2): it cannot be
the group's best. The sweeps' slow settings cost about a tenth of a full run."""


SETTLE_S = 0.1
"""Pause before every block of timed calls (protocol, step 3). After a BLAS-heavy
call OpenBLAS worker threads spin for about 2^28 cycles (~0.1 s) before they sleep,
taking a core from whoever runs next: KernelSHAP measured 181 ms right after a NumPy
`lstsq` loop, 154 ms after a 0.2 s pause, 154 ms after nothing."""


REWARM_S = 0.05
"""Untimed calls at the start of every block, until this much time has passed
(protocol, step 3). On the 2-core KVM machine a 4 ms saliency call ran at 4.2 ms in
a hot loop, but the 1st-4th calls after a 0.1 s pause took 6.5, 5.7, 5.5, 5.7 ms
(0.3 s pause: 10.3, 9.3, 8.6, 8.4 ms), and after one core spun alone for 0.1 s,
7.6, 6.0, 5.9, 5.5 ms: the cores take tens of ms of work to come back to speed."""
REWARM_CALL_MAX_S = 0.3
"""Contenders whose warm call is longer than this are not re-warmed: a 30 ms
ramp is a few percent of their call, and an extra call would cost seconds."""
PASSES = 3
"""Passes over the blocks (protocol, step 3); a contender's timed calls are shared
out among them, the first passes taking any remainder."""


def measure(
    contenders: dict[str, Callable[[], Any]],
    repeats: int = 5,
    budget_s: float | None = None,
    keep: tuple[str, ...] = ("jaxplain", "limit", "limit_chunked"),
    min_timed_s: float = 0.0,
    capped: tuple[str, ...] = (),
) -> dict[str, dict]:
    """Times zero-argument callables with the protocol above.

    Args:
      contenders: name -> zero-argument callable.
      repeats: timed calls each (more for cheap contenders, see step 3).
      budget_s: rough time allowed per contender (outside `keep`). A contender
        whose warm call takes longer runs fewer calls (at least one, all
        reported in `times_s`): a peer 50x slower than jaxplain needs no
        fine-grained median to show it.
      keep: the JAX contenders timed together, interleaved in one block, and
        never screened out or cut by `budget_s`.
      min_timed_s: every contender runs more calls, up to `MAX_ROUNDS`,
        until its timed calls add up to about this (0: exactly `repeats`);
        `budget_s` still caps the ones outside `keep`.
      capped: contenders of `keep` that `budget_s` caps too, to no fewer than
        `CAPPED_MIN_ROUNDS` calls (jaxplain with the CPU rewrites off: up to 8x
        slower, and a ratio of a few x needs no fine-grained median).

    Returns:
      `{name: {"first_s", "compile_s", "median_s", "min_s", "times_s"}}`; a
      contender that raises is reported as `{"error": message}` and left out.
    """
    out: dict[str, dict] = {}
    live: dict[str, Callable] = {}
    rounds: dict[str, int] = {}
    for name, fn in contenders.items():
        try:
            _, first, comp = first_call(fn)
            slow = budget_s is not None and name not in keep and first * (repeats + 1) > budget_s
            if slow and comp == 0.0:
                warm = first  # a slow call that compiled nothing is warm already
            else:
                t0 = time.perf_counter()
                block(fn())  # second warm-up
                warm = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - one failing peer must not stop the run
            out[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            continue
        out[name] = {"first_s": first, "compile_s": comp, "times_s": []}
        live[name] = fn
        n = max(1, repeats)
        if min_timed_s > 0:
            cap = MAX_ROUNDS if name in keep else PEER_MAX_ROUNDS
            n = max(n, min(cap, math.ceil(min_timed_s / max(warm, 1e-9))))
        if budget_s is not None and (name not in keep or name in capped) and warm * n > budget_s:
            floor = CAPPED_MIN_ROUNDS if name in keep else 1
            n = max(floor, min(n, int(budget_s // max(warm, 1e-9))))
        rounds[name] = n
        out[name]["warm_s"] = warm
    def warmable(names):  # the contenders a block's re-warm calls
        return [live[n] for n in names if out[n]["warm_s"] <= REWARM_CALL_MAX_S]

    suspects = screened_out(out, live, keep)
    for name in suspects:  # one slow call is not enough to drop a setting: time it again
        _settle(warmable([name]))
        t0 = time.perf_counter()
        block(live[name]())
        out[name]["warm_s"] = min(out[name]["warm_s"], time.perf_counter() - t0)
    for name in (n for n in screened_out(out, live, keep) if n in suspects):
        out[name]["screened_out"] = (
            f"two warm calls, the faster {out[name]['warm_s']:.3g} s, "
            f"over {SCREEN:g}x its group's fastest"
        )
        del live[name], rounds[name]
    blocks = [[n for n in live if n in keep]] + [[n] for n in live if n not in keep]
    blocks = [b for b in blocks if b]
    done = dict.fromkeys(live, 0)
    turn = 0  # rotates the order within the keep block from round to round
    for p in range(PASSES):
        share = {n: -(-rounds[n] * (p + 1) // PASSES) - done[n] for n in live}
        k = p % max(1, len(blocks))
        for blk in blocks[k:] + blocks[:k]:
            if not any(share[n] for n in blk):
                continue
            _settle(warmable(blk))
            for _ in range(max(share[n] for n in blk)):
                r = turn % len(blk)
                turn += 1
                for name in blk[r:] + blk[:r]:
                    if not share[name]:
                        continue
                    t0 = time.perf_counter()
                    block(live[name]())
                    out[name]["times_s"].append(time.perf_counter() - t0)
                    share[name] -= 1
                    done[name] += 1
    for name in live:
        ts = out[name]["times_s"]
        out[name]["median_s"] = statistics.median(ts)
        out[name]["min_s"] = min(ts)
    return out


def _settle(fns: list[Callable[[], Any]]) -> None:
    """The start of a block: a `SETTLE_S` pause, then untimed calls of `fns` in turn
    until `REWARM_S` has passed (none when `fns` is empty)."""
    time.sleep(SETTLE_S)
    t0 = time.perf_counter()
    while fns and time.perf_counter() - t0 < REWARM_S:
        for fn in fns:
            block(fn())


def screened_out(out: dict[str, dict], live: dict, keep: tuple[str, ...]) -> list[str]:
    """Non-default peer configurations too slow, by their warm call, to be their group's best."""
    fastest: dict[str, float] = {}
    for name in live:
        if name not in keep:
            g = group_of(name)
            fastest[g] = min(fastest.get(g, math.inf), out[name]["warm_s"])
    return [
        name
        for name in live
        if name not in keep
        and not is_default(name)
        and out[name]["warm_s"] > SCREEN * fastest[group_of(name)]
    ]


# ---- ratios ---------------------------------------------------------------------------


def ratio(num: dict | None, den: dict | None, key: str = "median_s") -> float | None:
    """`num[key] / den[key]`, or None when either is missing or errored."""
    if not num or not den or key not in num or key not in den or not den[key]:
        return None
    return float(num[key]) / float(den[key])


def group_of(peer_name: str) -> str:
    """The peer a configuration belongs to: `"captum.Lime[perturbations_per_eval=250]"` -> `"captum.Lime"`."""
    return peer_name.split("[", 1)[0]


def is_default(peer_name: str) -> bool:
    """A configuration that is the peer's default (or the only one, named without brackets)."""
    return "(default)" in peer_name or "[default]" in peer_name or "[" not in peer_name


def best_of(peers: dict[str, dict], group: str) -> tuple[str | None, dict | None]:
    """The fastest timed configuration (by median) of one peer group."""
    ok = {k: v for k, v in peers.items() if group_of(k) == group and "median_s" in v}
    if not ok:
        return None, None
    name = min(ok, key=lambda k: ok[k]["median_s"])
    return name, ok[name]


def compute_ratios(jaxplain: dict, limit: dict, peers: dict[str, dict]) -> tuple[dict, dict]:
    """`jaxplain/limit`, and per peer `best/jaxplain` and `default/jaxplain` (medians).

    Returns `(ratios, best_peer)`; `best_peer[group]` names the fastest configuration.
    A ratio is None when a side is missing or failed.
    """
    ratios: dict[str, float | None] = {"jaxplain/limit": ratio(jaxplain, limit)}
    best: dict[str, str] = {}
    for g in sorted({group_of(k) for k in peers}):
        name, timing = best_of(peers, g)
        if name is None:
            continue
        best[g] = name
        ratios[f"{g}:best/jaxplain"] = ratio(timing, jaxplain)
        defaults = [
            k for k in peers if group_of(k) == g and is_default(k) and "median_s" in peers[k]
        ]
        if defaults:
            ratios[f"{g}:default/jaxplain"] = ratio(peers[defaults[0]], jaxplain)
    return ratios, best


