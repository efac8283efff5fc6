"""The benchmark driver: `python -m benchmarks [--quick] [--only NAME ...] [--update-readme] [--out DIR]`.

For every case whose jaxplain function exists, on every benchmark model (both
pooling variants): verify the twins, time jaxplain, the physical limit and the
peers in one interleaved set of rounds, measure memory, check agreement, and
write `latest.json`, `table.md`, `ratios.png` and `scaling.png` to the output
directory. `main(argv)` is the entry point (`jaxplain bench` calls it).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain._core import batching
from jaxplain._compile import jit

from . import cases as C
from . import extras, report, twins
from . import harness as H

RESULTS_DIR = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent.parent / "README.md"
EXTRAS = ("agreement_ig", "sample_efficiency", "scaling")
DISPATCH_MIN_CHUNKS = 4
"""`limit_dispatch` (one jitted call per default chunk) is timed from this many chunks
up; below it the calls are too few to differ from `limit_chunked`. It was timed at
64 and 128 per call; 64 was the faster in 19 of 26 cases, and the second size cost
about 50 s of a 980 s full run."""
PROGRAM_TIMED_BELOW_S = 0.05
"""The compiled-whole program is timed on cases whose call is under this: above it
the public call's fraction of a millisecond of checks and dispatch is under 1%,
and timing it cost about 45 s of a full run."""

PEER_BUDGET_S = 6.0
"""Rough seconds of timed calls per peer configuration (`harness.measure`'s
`budget_s`): a configuration whose warm call is over 1.5 s runs in fewer rounds.
Full runs used 15 s; 6 s (as `--quick` had) cut about 19 s, all from
configurations 3-40x slower than jaxplain (Captum's and shap's defaults)."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class _LazyOutputs(dict):
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


def _limit(case: C.Case, ctx: C.Ctx, bench: C.Bench, n: int):
    """The physical limit for `n` model evaluations: `(fn, (jit_fn, args))`."""
    model = ctx.model
    if case.kind == "fwdbwd_to_layer":
        xd, td = jnp.asarray(bench.x), jnp.asarray(bench.target)
        f, h, p = ctx.features_fn, ctx.head_fn, ctx.variables
        fn = lambda: H.limit_forward_backward_to_layer(f, h, p, xd, td)
        return fn, (lambda p_, x_: H._fwd_bwd_to(f, h, p_, x_, td), (p, xd))
    inputs = H.limit_inputs(bench.x, n)
    rows = (np.arange(n) * bench.n_images) // n
    td = jnp.asarray(np.asarray(bench.target)[rows])
    if case.kind == "fwd":
        fn = lambda: H.limit_forward(model, inputs, td)
        return fn, (lambda m, z: H._select(m(z), td), (model, inputs))
    n_out = bench.n_images if n % bench.n_images == 0 else 1
    fn = lambda: H.limit_forward_backward(model, inputs, td, n_out=n_out)
    return fn, (lambda m, z: H._fwd_bwd(m, z, td, n_out), (model, inputs))


def run_case(
    case: C.Case,
    ctx: C.Ctx,
    repeats: int,
    budget_s: float | None = None,
    min_timed_s: float = 0.0,
) -> dict:
    phases: dict[str, float] = {}  # where the case's wall time went (the full run's budget)
    t0 = time.perf_counter()
    bench = case.build(ctx)
    out, first_s, compile_s = H.first_call(bench.jaxplain)
    reported = getattr(out, "n_evals", None)
    reported = int(np.sum(np.asarray(reported))) if reported is not None else None
    n = reported if (bench.reported_evals and reported) else bench.n_evals
    limit_fn, limit_mem = _limit(case, ctx, bench, n)
    contenders = {"jaxplain": bench.jaxplain, "limit": limit_fn}
    chunk = batching.default_batch_size()
    if case.kind != "fwdbwd_to_layer" and n > chunk:
        inputs = H.limit_inputs(bench.x, n)
        td = jnp.asarray(np.asarray(bench.target)[(np.arange(n) * bench.n_images) // n])
        grad = case.kind == "fwdbwd"
        contenders["limit_chunked"] = lambda: H.limit_chunked(
            ctx.model, inputs, td, chunk=chunk, grad=grad
        )
    if case.kind != "fwdbwd_to_layer" and n >= DISPATCH_MIN_CHUNKS * chunk:
        # A third reference: separate jitted calls of jaxplain's default chunk.
        inputs = H.limit_inputs(bench.x, n)
        td = jnp.asarray(np.asarray(bench.target)[(np.arange(n) * bench.n_images) // n])
        parts = [(inputs[s : s + chunk], td[s : s + chunk]) for s in range(0, n, chunk)]
        contenders["limit_dispatch"] = functools.partial(
            H.limit_dispatch, ctx.model, parts, grad=case.kind == "fwdbwd"
        )
    program = None
    if bench.memory is not None:
        # The method compiled whole, as under a caller's jit. Its XLA buffer sizes are
        # the memory figure; on calls under PROGRAM_TIMED_BELOW_S it is also timed next
        # to the public call, to show what the call adds to its program (checks, dispatch).
        fn, args = bench.memory
        try:
            program = jit(fn).lower(*args).compile()
            run_program = functools.partial(program, *args)
            _, program_s, _ = H.first_call(run_program)
            if program_s < PROGRAM_TIMED_BELOW_S:
                contenders["jaxplain_program"] = run_program
        except Exception as e:  # noqa: BLE001 - a method a caller cannot jit: no program
            log(f"  {case.name}: not compiled whole ({type(e).__name__})")
    keep = tuple(contenders)
    phases["setup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    timings = H.measure(
        {**contenders, **bench.peers}, repeats, budget_s=budget_s, keep=keep, min_timed_s=min_timed_s
    )
    phases["timing"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    jt, lt = timings.pop("jaxplain"), timings.pop("limit")
    lct = timings.pop("limit_chunked", None)
    if lct is not None:
        lct["chunk"] = chunk
    lbt = timings.pop("limit_dispatch", None)
    if lbt is not None:
        lbt["batch"] = chunk
    pgt = timings.pop("jaxplain_program", None)
    jt["first_s"], jt["compile_s"] = first_s, compile_s
    peers = timings
    # Memory, untimed: XLA accounting for jitted code, host RSS growth for everyone timed.
    if program is not None:
        jt["xla_mb"] = H.compiled_memory_mb(program)
    lt["xla_mb"] = H.xla_memory_mb(limit_mem[0], *limit_mem[1])
    jt["rss_peak_mb"] = H.peak_rss_growth(bench.jaxplain)
    lt["rss_peak_mb"] = H.peak_rss_growth(limit_fn)
    ratios, best = H.compute_ratios(jt, lt, peers)
    ratios["jaxplain/limit_chunked"] = H.ratio(jt, lct)
    ratios["jaxplain/limit_dispatch"] = H.ratio(jt, lbt)
    ratios["program/limit"] = H.ratio(pgt, lt)
    for name in best.values():
        peers[name]["rss_peak_mb"] = H.peak_rss_growth(bench.peers[name])
    for name, k in bench.peer_evals.items():
        if name in peers:
            peers[name]["n_evals"] = k
    phases["memory"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    agreement = []
    if bench.agreement is not None:
        try:
            agreement = bench.agreement(
                np.asarray(getattr(out, "values", out)), _LazyOutputs(bench.peers)
            )
        except Exception as e:  # noqa: BLE001 - report, do not stop the run
            agreement = [{"check": case.name, "error": f"{type(e).__name__}: {e}"[:300]}]
    phases["agreement"] = time.perf_counter() - t0
    return {
        "case": case.name,
        "method": case.method,
        "model": ctx.spec.name,
        "kind": case.kind,
        "n_images": bench.n_images,
        "n_evals": n,
        "n_evals_reported": reported,
        "settings": bench.settings,
        "jaxplain": jt,
        "limit": lt,
        "limit_chunked": lct,
        "limit_dispatch": lbt,
        "jaxplain_program": pgt,
        "peers": peers,
        "best_peer": best,
        "ratios": ratios,
        "agreement": agreement,
        "note": bench.note,
        "phases_s": phases,
    }


def make_ctx(spec: twins.Spec, quick: bool, use_peers: bool, record: dict) -> C.Ctx:
    ctx = C.Ctx(spec, quick=quick)
    entry: dict[str, Any] = {"model": spec.name, "features": list(spec.features), "size": spec.size}
    if use_peers and twins.torch_available():
        tm = twins.torch_twin(spec, ctx.variables)
        x = ctx.images(16)
        try:
            ctx.twin_error = twins.check_twins(jit(ctx.model.__call__), tm, x)
            ctx.torch_model = tm
            entry.update(max_rel_logit_error=ctx.twin_error, verified=True)
        except twins.TwinMismatch as e:
            ctx.twin_problem = str(e)
            entry.update(verified=False, problem=str(e))
            log(f"{spec.name}: {e}")
    else:
        entry.update(verified=False, problem="torch not installed" if use_peers else "--no-peers")
    record["twins"][spec.name] = entry
    return ctx


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="a ~2 minute smoke run (small avg-pool model)"
    )
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="METHOD",
        help=f"cases to run (names from the case table, or {', '.join(EXTRAS)})",
    )
    ap.add_argument(
        "--update-readme", action="store_true", help="rewrite the README benchmark section"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default benchmarks/results, "
        "or benchmarks/results/quick with --quick)",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds, exactly (default 3 quick, 4 full, and more for cheap calls "
        f"until each contender has about {H.MIN_TIMED_S:g} s of timed calls)",
    )
    ap.add_argument("--no-peers", action="store_true", help="jaxplain vs the limit only")
    ap.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="regenerate table/plots/README from an existing JSON, without running",
    )
    ap.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    out_dir = args.out or (RESULTS_DIR / "quick" if args.quick else RESULTS_DIR)
    if args.from_json is not None:
        import json

        record = json.loads(Path(args.from_json).read_text())
        report.write_all(record, out_dir, readme=args.readme if args.update_readme else None)
        return 0
    t_start = time.perf_counter()
    # 4 full rounds: the full run fits 15 min on slower 2-core machines (5 took 980 s on an AMD EPYC)
    repeats = args.repeats or (3 if args.quick else 4)
    min_timed_s = H.MIN_TIMED_S if args.repeats is None else 0.0  # explicit --repeats is exact
    known = {c.name for c in C.CASES} | set(EXTRAS)
    if args.only:
        bad = sorted(set(args.only) - known)
        if bad:
            print(
                f"--only: unknown case(s) {bad}; expected names from {sorted(known)}",
                file=sys.stderr,
            )
            return 2
    selected = [
        c for c in C.CASES if (c.name in args.only if args.only else (c.quick or not args.quick))
    ]
    record = H.new_record(
        {
            "quick": args.quick,
            "only": args.only,
            "repeats": repeats,
            "min_timed_s": min_timed_s,
            "max_rounds": H.MAX_ROUNDS,
            "peer_max_rounds": H.PEER_MAX_ROUNDS,
            "extended": "all",  # which contenders min_timed_s applies to
            "passes": H.PASSES,  # blocks with a pause and re-warm (harness protocol, step 3)
            "rewarm_s": H.REWARM_S,
            "no_peers": args.no_peers,
            "argv": list(argv or sys.argv[1:]),
        }
    )
    for lib, why in record["peers_available"].items():
        if why is not None and not args.no_peers:
            log(f"peer {lib} unavailable ({why}); its columns are skipped")
    specs = (
        [twins.Spec("small", "avg")]
        if args.quick
        else [twins.Spec(a, p) for a in ("small", "large") for p in ("avg", "max")]
    )
    ctxs: dict[str, C.Ctx] = {}
    for spec in specs:
        cases_here = [c for c in selected if spec.arch in c.archs]
        if not cases_here:
            continue
        ctx = ctxs[spec.name] = make_ctx(spec, args.quick, not args.no_peers, record)
        for case in cases_here:
            if not hasattr(jx, case.method):
                record["skipped"].append(
                    {
                        "case": case.name,
                        "model": spec.name,
                        "reason": f"jaxplain.{case.method} does not exist yet",
                    }
                )
                log(f"skip {case.name}: jaxplain.{case.method} does not exist")
                continue
            log(f"{case.name} on {spec.name} ...")
            t_case = time.perf_counter()
            try:
                res = run_case(
                    case,
                    ctx,
                    repeats,
                    budget_s=PEER_BUDGET_S,
                    min_timed_s=min_timed_s,
                )
            except Exception as e:  # noqa: BLE001 - one broken case must not lose the run
                record["skipped"].append(
                    {
                        "case": case.name,
                        "model": spec.name,
                        "reason": f"{type(e).__name__}: {e}"[:500],
                    }
                )
                log(f"  FAILED: {type(e).__name__}: {e}")
                continue
            res["wall_s"] = time.perf_counter() - t_case  # the full run's budget, per case
            record["results"].append(res)
            record["agreement"].extend(dict(a, model=spec.name) for a in res["agreement"])
            log(f"  {report.one_line(res)} [{res['wall_s']:.0f} s]")
            H.write_json(record, Path(out_dir) / "partial.json")  # survives an interrupted run
    small = ctxs.get("small-avg") or make_ctx(
        twins.Spec("small", "avg"), args.quick, not args.no_peers, record
    )
    for extra in ("sample_efficiency", "scaling"):
        wanted = extra in args.only if args.only else not (args.quick and extra == "scaling")
        if not wanted:
            continue
        log(f"{extra} ...")
        t_extra = time.perf_counter()
        try:
            record[extra] = getattr(extras, extra)(small, quick=args.quick, log=log)
            record["extras_wall_s"][extra] = time.perf_counter() - t_extra
        except Exception as e:  # noqa: BLE001
            record["skipped"].append({"case": extra, "reason": f"{type(e).__name__}: {e}"[:500]})
            log(f"  FAILED: {type(e).__name__}: {e}")
    record["wall_s"] = time.perf_counter() - t_start
    if "torch" in sys.modules:
        record["machine"]["torch_threads"] = sys.modules["torch"].get_num_threads()
    try:
        import os

        record["machine"]["load_avg_end"] = list(os.getloadavg())
    except OSError:
        pass
    paths = report.write_all(record, out_dir, readme=args.readme if args.update_readme else None)
    (Path(out_dir) / "partial.json").unlink(missing_ok=True)
    log(f"done in {record['wall_s']:.0f} s; wrote {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
