"""`jaxplain.plan` against measurement: evaluations, peak memory and time, predicted vs measured.

    python -m benchmarks.plan_bench [--model small-avg] [--repeats 7] [--plans 3] [--json FILE]
                                    [--write]   # benchmarks/results/plan_bench.md

Cases, on the benchmark CNN (`twins.py`) with the settings of the main benchmark's
cases (`cases/`): integrated gradients (16 images, 50 steps, trapezoid rule),
KernelSHAP and LIME (one image, 64 grid superpixels, 1000 samples), occlusion (16
images, 4x4 windows, stride 4), all with the default `batch_size`.

For each case:

- evaluations: `plan(...).evals` against the sum of the result's `n_evals`;
- peak memory: `plan(...).peak_bytes` (one chunk's program) against XLA's
  accounting of the whole call's compiled program (arguments + outputs +
  temporaries, `memory.xla_memory_mb`);
- time: `plan(...).seconds` against the median of `--repeats` warm calls
  (compile excluded). `--plans` plans are made, interleaved with the timed calls,
  and their median is reported with its spread (min-max), since a plan's own
  calibration is a single timed chunk on a possibly busy machine.

The issue's goals: evaluations exact, memory within 10%, time within 25%. Nothing
here asserts them: timings on a shared machine are noisy (the load average is
printed with the results).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx

from . import twins
from .harness import block
from .memory import xla_memory_mb

RESULT = Path(__file__).resolve().parent / "results" / "plan_bench.md"


def cases(model, size: int) -> dict:
    """`{name: (method, x, keyword arguments)}` with the main benchmark's settings."""
    seg = np.asarray(jx.grid_segments(size, size, 8))  # 64 features
    one, sixteen = twins.images(1, size, seed=1), twins.images(16, size, seed=1)

    def predicted(x):
        return np.asarray(jnp.argmax(model(jnp.asarray(x)), -1)).astype(np.int32)

    key = jax.random.key(0)
    return {
        "integrated_gradients": (jx.integrated_gradients, sixteen,
                                 dict(target=predicted(sixteen), steps=50,
                                      rule="riemann_trapezoid")),
        "kernel_shap": (jx.kernel_shap, one, dict(target=predicted(one), segments=seg, key=key,
                                                  n_samples=1000)),
        "occlusion": (jx.occlusion, sixteen, dict(target=predicted(sixteen), window=4,
                                                  strides=4)),
        "lime": (jx.lime, one, dict(target=predicted(one), segments=seg, key=key,
                                    n_samples=1000)),
    }


def measure(method, model, x, kw: dict, repeats: int, plans: int) -> dict:
    """Predicted (median of `plans` plans) and measured figures of one call."""
    x = jnp.asarray(x)
    call = lambda: method(model, x, progress=False, **kw)  # noqa: E731
    out = block(call())  # compile and warm
    evals = int(np.sum(np.asarray(out.n_evals)))
    mem = xla_memory_mb(lambda m, z: method(m, z, **kw), model, x)
    times, predicted = [], []
    t0 = time.perf_counter()
    p = jx.plan(method, model, x, **kw)
    plan_s = time.perf_counter() - t0
    predicted.append(p.seconds)
    for i in range(max(repeats, plans)):
        if i < repeats:
            t0 = time.perf_counter()
            block(call())
            times.append(time.perf_counter() - t0)
        if 0 < i < plans:
            predicted.append(jx.plan(method, model, x, **kw).seconds)
    measured = statistics.median(times)
    pred = statistics.median(predicted)
    return dict(
        evals_predicted=p.evals, evals_measured=evals, chunks=p.chunks, chunk_size=p.chunk_size,
        peak_mb_predicted=None if p.peak_bytes is None else p.peak_bytes / 2**20,
        peak_mb_measured=mem,
        seconds_predicted=pred, seconds_predicted_min=min(predicted),
        seconds_predicted_max=max(predicted), seconds_measured=measured,
        seconds_measured_min=min(times), seconds_measured_max=max(times),
        chunk_seconds=p.chunk_seconds, plan_seconds=plan_s, gflops=(p.flops or 0) / 1e9,
        time_ratio=pred / measured,
        memory_ratio=None if p.peak_bytes is None or not mem else p.peak_bytes / 2**20 / mem,
    )


def table(rows: dict) -> str:
    head = ("| case | evals plan / run | chunks x size | peak MiB plan / call (ratio) | "
            "time plan / run (ratio) | plan spread | GFLOP |")
    lines = [head, "|" + "---|" * 7]
    for name, r in rows.items():
        mem = ("-" if r["memory_ratio"] is None else
               f"{r['peak_mb_predicted']:.2f} / {r['peak_mb_measured']:.2f} "
               f"({r['memory_ratio']:.2f})")
        lines.append(
            f"| {name} | {r['evals_predicted']} / {r['evals_measured']} | "
            f"{r['chunks']} x {r['chunk_size']} | {mem} | "
            f"{r['seconds_predicted'] * 1e3:.1f} / {r['seconds_measured'] * 1e3:.1f} ms "
            f"({r['time_ratio']:.2f}) | {r['seconds_predicted_min'] * 1e3:.1f}-"
            f"{r['seconds_predicted_max'] * 1e3:.1f} ms | {r['gflops']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.plan_bench", description=__doc__
                                 .split("\n")[0])
    ap.add_argument("--model", default="small-avg",
                    choices=[f"{a}-{p}" for a in twins.ARCHS for p in ("avg", "max")])
    ap.add_argument("--repeats", type=int, default=7, help="timed warm calls per case")
    ap.add_argument("--plans", type=int, default=3, help="plans per case (median reported)")
    ap.add_argument("--only", nargs="+", default=None, help="cases to run")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--write", action="store_true",
                    help=f"write the table to {RESULT.relative_to(RESULT.parents[2])}")
    args = ap.parse_args(argv)
    spec = twins.Spec(*args.model.split("-"))
    module, variables = twins.flax_model(spec)
    model = jx.from_linen(module, variables)
    rows = {}
    for name, (method, x, kw) in cases(model, spec.size).items():
        if args.only and name not in args.only:
            continue
        print(f"[plan_bench] {name} ...", file=sys.stderr, flush=True)
        rows[name] = measure(method, model, x, kw, args.repeats, args.plans)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    head = (f"`jaxplain.plan` against measurement on {spec.name}, "
            f"{jax.devices()[0].platform} ({os.cpu_count()} CPUs, load average "
            f"{', '.join(f'{v:.1f}' for v in load) if load else '?'}), "
            f"{time.strftime('%Y-%m-%d', time.gmtime())}, jax {jax.__version__}")
    print(head)
    print(table(rows))
    if args.write:
        RESULT.write_text(f"# Cost known before the call\n\n{head}. Written by "
                          f"`python -m benchmarks.plan_bench --write`; goals: evaluations "
                          f"exact, memory within 10%, time within 25%.\n\n{table(rows)}\n")
    if args.json is not None:
        args.json.write_text(json.dumps(dict(model=spec.name, load=load, rows=rows), indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
