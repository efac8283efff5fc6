"""The benchmark driver: `python -m benchmarks [--quick] [--only NAME ...] [--out DIR] [--publish]`.

For every case of the case table (keyed by the method registry), on every
benchmark model: verify the twins, time jaxplain, its limits, jaxplain with the
CPU rewrites off, and the peers in one interleaved set of rounds, measure memory,
check agreement, and write `latest.json`, `table.md`, `ratios.png` and
`scaling.png` to the output directory: `--out DIR`, by default a git-ignored
folder (`benchmarks/out/quick` or `benchmarks/out/full`). Only `--publish` (or
its older name `--update-readme`) also writes them to `benchmarks/results/` and
regenerates the README section. Registered methods without a case are listed in
the report. The backend is whatever JAX finds (nothing forces the CPU); the
peers run on CUDA when torch sees a GPU. `main(argv)` is the entry point
(`jaxplain bench` calls it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from jaxplain._compile import jit

from . import cases as C
from . import execute as E
from . import extras, report, twins
from . import harness as H
from . import record as R
from .precision import full_precision

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
"""The published results (only `--publish` writes here)."""
OUT_DIR = HERE / "out"
"""Ad hoc runs write below here by default (git-ignored)."""
README = HERE.parent / "README.md"
EXTRAS = ("sample_efficiency", "scaling")
PARTIAL = ("quick", "only", "skip", "models", "max_minutes", "no_peers")
"""Arguments of a run that is not published (`--publish` refuses its record)."""
MODELS = tuple(f"{a}-{p}" for a in ("small", "large") for p in ("avg", "max"))


PEER_BUDGET_S = 6.0
"""Rough seconds of timed calls per peer configuration (`harness.measure`'s
`budget_s`): a configuration whose warm call is over 1.5 s runs in fewer rounds.
Full runs used 15 s; 6 s (as `--quick` had) cut about 19 s, all from
configurations 3-40x slower than jaxplain (Captum's and shap's defaults)."""


DESCRIPTION = (
    "Time jaxplain's methods against their physical limit (the same model evaluations as one "
    "jitted batch), with the CPU rewrites off, and against Captum, shap, lime and Quantus on a "
    "PyTorch twin; write table.md, latest.json and charts to --out (nothing is published "
    "without --publish).")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_ctx(spec: twins.Spec, quick: bool, use_peers: bool, record: dict) -> C.Ctx:
    """The benchmark model, with its PyTorch twin verified (at full precision) when peers run."""
    ctx = C.Ctx(spec, quick=quick)
    entry = {"model": spec.name, "features": list(spec.features), "size": spec.size}
    if use_peers and twins.torch_available():
        tm = twins.torch_twin(spec, ctx.variables)
        x = ctx.images(16)
        try:
            with full_precision():
                ctx.twin_error = twins.check_twins(jit(ctx.model.__call__), tm, x)
            ctx.torch_model = tm
            entry.update(max_rel_logit_error=ctx.twin_error, verified=True,
                         torch_device=twins.torch_device())
        except twins.TwinMismatch as e:
            ctx.twin_problem = str(e)
            entry.update(verified=False, problem=str(e))
            log(f"{spec.name}: {e}")
    else:
        entry.update(verified=False, problem="torch not installed" if use_peers else "--no-peers")
    record["twins"][spec.name] = entry
    return ctx


class _Parser(argparse.ArgumentParser):
    """Argument errors are one line on stderr (exit status 2), as for the `jaxplain` command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message.splitlines()[0]}\n")


def parse(argv: Sequence[str] | None, prog: str = "python -m benchmarks") -> argparse.Namespace:
    ap = _Parser(prog=prog, description=DESCRIPTION)
    ap.add_argument("--quick", action="store_true",
                    help="a ~2 minute smoke run (small avg-pool model, the quick cases)")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help=f"cases to run (registry names of the case table, or {', '.join(EXTRAS)})")
    ap.add_argument("--skip", nargs="+", metavar="NAME", default=[],
                    help="cases or extras to leave out")
    ap.add_argument("--models", nargs="+", choices=MODELS, default=None,
                    help="benchmark models (default: small-avg with --quick, else all four)")
    ap.add_argument("--out", type=Path, default=None, metavar="DIR",
                    help="output directory (default benchmarks/out/quick or benchmarks/out/full, "
                    "git-ignored)")
    ap.add_argument("--publish", "--update-readme", dest="publish", action="store_true",
                    help="also write benchmarks/results/ and the README benchmark section "
                    "(a full run only)")
    ap.add_argument("--repeats", type=int, default=None, metavar="N",
                    help="timed rounds, exactly (default 3 quick, 4 full, and more for cheap calls "
                    f"until each contender has about {H.MIN_TIMED_S:g} s of timed calls)")
    ap.add_argument("--max-minutes", type=float, default=None, metavar="M",
                    help="start no case or extra after this many minutes (the rest are listed "
                    "as skipped)")
    ap.add_argument("--no-peers", action="store_true", help="jaxplain vs the limit only")
    ap.add_argument("--from-json", type=Path, default=None, metavar="FILE",
                    help="regenerate table/plots (and with --publish the README) from a JSON "
                    "record, without running")
    ap.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def check_args(args: argparse.Namespace, names: set[str]) -> str | None:
    """A one-line problem with the arguments, or None."""
    for flag in ("only", "skip"):
        bad = sorted(set(getattr(args, flag) or ()) - names - set(EXTRAS))
        if bad:
            return (f"--{flag}: unknown case(s) {bad}; expected names from "
                    f"{sorted(names | set(EXTRAS))}")
    if args.publish and args.from_json is None and (args.quick or args.only or args.models
                                                    or args.skip or args.max_minutes
                                                    or args.no_peers):
        return ("--publish: expected a full run (no --quick, --only, --skip, --models, "
                "--max-minutes or --no-peers); write partial runs with --out")
    return None


def write(record: dict, args: argparse.Namespace, out_dir: Path) -> list[Path]:
    """The run's files in `out_dir`; with `--publish` also in the results folder and README."""
    paths = report.write_all(record, out_dir)
    if args.publish:
        a = record.get("args", {})
        partial = {k: a[k] for k in PARTIAL if a.get(k)}
        if partial:
            raise ValueError(f"--publish: expected the record of a full run, got {partial}")
        paths += report.write_all(record, args.results_dir, readme_path=args.readme)
    return paths


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Runs the benchmarks (`--help`); `prog` names the command in the help (`jaxplain bench`)."""
    args = parse(argv, prog)
    try:
        matched, uncovered = C.plan()
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    problem = check_args(args, {c.name for c, _ in matched})
    if problem:
        print(problem, file=sys.stderr)
        return 2
    out_dir = args.out or OUT_DIR / ("quick" if args.quick else "full")
    if args.from_json is not None:
        import json

        record = json.loads(Path(args.from_json).read_text())
        try:
            write(record, args, out_dir)
        except ValueError as e:
            print(e, file=sys.stderr)
            return 2
        return 0
    t_start = time.perf_counter()
    record = new_record(args, argv)
    record["no_case"] = [{"method": e.name, "family": e.family} for e in uncovered]
    deadline = None if args.max_minutes is None else t_start + 60 * args.max_minutes
    ctxs = run_cases(args, record, matched, out_dir, deadline)
    run_extras(args, record, ctxs, deadline)
    finish(record, t_start)
    paths = write(record, args, out_dir)
    (Path(out_dir) / "partial.json").unlink(missing_ok=True)
    log(f"done in {record['wall_s']:.0f} s; wrote {', '.join(str(p) for p in paths)}")
    return 0


def new_record(args: argparse.Namespace, argv: Sequence[str] | None) -> dict:
    # 4 full rounds: the full run fits 15 min on slower 2-core machines (5 took 980 s on an AMD EPYC)
    args.repeats_used = args.repeats or (3 if args.quick else 4)
    args.min_timed_s = H.MIN_TIMED_S if args.repeats is None else 0.0  # --repeats is exact
    record = R.new_record({
        "quick": args.quick, "only": args.only, "skip": args.skip, "models": args.models,
        "max_minutes": args.max_minutes, "repeats": args.repeats_used,
        "min_timed_s": args.min_timed_s, "max_rounds": H.MAX_ROUNDS,
        "peer_max_rounds": H.PEER_MAX_ROUNDS,
        "extended": "all",  # which contenders min_timed_s applies to
        "passes": H.PASSES,  # blocks with a pause and re-warm (harness protocol, step 3)
        "rewarm_s": H.REWARM_S, "no_peers": args.no_peers,
        "argv": list(argv if argv is not None else sys.argv[1:]),
    })
    d = record["device"]
    log(f"backend {d['platform']} ({d['device_kind']}, {d['device_count']} device(s)); "
        f"chunk {d['default_batch_size']}; CPU rewrites {d['cpu_rewrites']} "
        f"({'on' if d['cpu_rewrites_active'] else 'off'}); peers on "
        f"{(d.get('torch') or {}).get('device', '-')}")
    for lib, why in record["peers_available"].items():
        if why is not None and not args.no_peers:
            log(f"peer {lib} unavailable ({why}); its columns are skipped")
    return record


def selected(args: argparse.Namespace, matched: list) -> list:
    """The (case, entry) pairs this run times."""
    if args.only:
        chosen = [(c, e) for c, e in matched if c.name in args.only]
    else:
        chosen = [(c, e) for c, e in matched if c.quick or not args.quick]
    return [(c, e) for c, e in chosen if c.name not in args.skip]


def run_cases(args, record: dict, matched: list, out_dir: Path, deadline) -> dict:
    """Every selected case on every selected model; returns the models' contexts."""
    names = args.models or (["small-avg"] if args.quick else list(MODELS))
    chosen = selected(args, matched)
    ctxs: dict[str, C.Ctx] = {}
    for spec in (twins.Spec(*n.split("-")) for n in names):
        for case, entry in ((c, e) for c, e in chosen if spec.arch in c.archs):
            if deadline is not None and time.perf_counter() > deadline:
                skip(record, case.name, spec.name,
                     f"time budget (--max-minutes {args.max_minutes:g}) reached")
                continue
            if spec.name not in ctxs:
                ctxs[spec.name] = make_ctx(spec, args.quick, not args.no_peers, record)
            run_one(args, record, case, entry, ctxs[spec.name], out_dir)
    return ctxs


def run_one(args, record: dict, case: C.Case, entry, ctx: C.Ctx, out_dir: Path) -> None:
    """One case on one model into the record (a failure is recorded as skipped)."""
    log(f"{case.name} on {ctx.spec.name} ...")
    t_case = time.perf_counter()
    try:
        res = E.run_case(case, entry, ctx, args.repeats_used, budget_s=PEER_BUDGET_S,
                         min_timed_s=args.min_timed_s, log=log)
    except Exception as e:  # noqa: BLE001 - one broken case must not lose the run
        skip(record, case.name, ctx.spec.name, f"{type(e).__name__}: {e}")
        log(f"  FAILED: {type(e).__name__}: {e}")
        return
    res["wall_s"] = time.perf_counter() - t_case  # the full run's budget, per case
    record["results"].append(res)
    record["agreement"].extend(dict(a, model=ctx.spec.name) for a in res["agreement"])
    log(f"  {report.one_line(res)} [{res['wall_s']:.0f} s]")
    R.write_json(record, Path(out_dir) / "partial.json")  # survives an interrupted run


def skip(record: dict, case: str, model: str | None, reason: str) -> None:
    row = {"case": case, "reason": reason[:500]}
    if model:
        row["model"] = model
    record["skipped"].append(row)


def run_extras(args, record: dict, ctxs: dict, deadline) -> None:
    """Sample efficiency and the scaling sweeps on the small average-pool model."""
    wanted = [x for x in EXTRAS if (x in args.only if args.only else
                                    not (args.quick and x == "scaling")) and x not in args.skip]
    if args.models and "small-avg" not in args.models:
        wanted = []
    for extra in wanted:
        if deadline is not None and time.perf_counter() > deadline:
            skip(record, extra, None, f"time budget (--max-minutes {args.max_minutes:g}) reached")
            continue
        if "small-avg" not in ctxs:
            ctxs["small-avg"] = make_ctx(twins.Spec("small", "avg"), args.quick,
                                         not args.no_peers, record)
        log(f"{extra} ...")
        t_extra = time.perf_counter()
        try:  # errors against exact values: at full precision (timing at the defaults)
            with full_precision() if extra == "sample_efficiency" else contextlib.nullcontext():
                record[extra] = getattr(extras, extra)(ctxs["small-avg"], quick=args.quick,
                                                       log=log)
            record["extras_wall_s"][extra] = time.perf_counter() - t_extra
        except Exception as e:  # noqa: BLE001
            skip(record, extra, None, f"{type(e).__name__}: {e}")
            log(f"  FAILED: {type(e).__name__}: {e}")


def finish(record: dict, t_start: float) -> None:
    record["wall_s"] = time.perf_counter() - t_start
    torch = sys.modules.get("torch")  # only if a peer imported it
    if torch is not None:
        record["machine"]["torch_threads"] = torch.get_num_threads()
    record["device"]["memory_stats_end"] = R.memory_stats()
    try:
        record["machine"]["load_avg_end"] = list(os.getloadavg())
    except OSError:
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
