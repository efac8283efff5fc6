"""Streaming throughput of `explain_dataset` vs the jitted method on pre-loaded batches,
and first-call compile time vs a warm persistent compilation cache.

    python -m benchmarks.pipeline_throughput [--n 2048] [--batch 128] [--json out.json]

The reference loop calls the public method on batches already on the device and
waits for the last result (no host work at all). The pipeline reads NumPy batches
from a generator, re-chunks them, checks them, sends them to the device, runs the
same computation and brings every result back to host NumPy. Ratio = pipeline
images/s / reference images/s (goal >= 0.9). Repetitions are interleaved and the
best of each is kept, to be robust to a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import jax
import numpy as np

import jaxplain as jx
from jaxplain import testing


def setup(n: int, size: int = 32):
    module = testing.tiny_cnn(n_classes=10, features=(8, 16))
    x = np.asarray(testing.random_images(0, n=n, size=size, channels=3))
    model = jx.from_linen(module, module.init(jax.random.key(0), x[:1]))
    return model, x


def methods(size: int):
    seg = jx.grid_segments(size, size, 4)
    key = jax.random.key(0)
    return {
        "saliency": (jx.saliency, dict(target="predicted")),
        "integrated_gradients": (jx.integrated_gradients, dict(target="predicted", steps=16)),
        "lime": (jx.lime, dict(target="predicted", segments=seg, n_samples=64, key=key)),
    }


def reference(method, model, batches, kw):
    out = None
    t = time.perf_counter()
    for i, xb in enumerate(batches):
        kwi = dict(kw)
        if "key" in kwi:
            kwi["key"] = jax.random.fold_in(kwi["key"], i)
        out = method(model, xb, **kwi)
    jax.block_until_ready(out)
    return time.perf_counter() - t


def pipeline(method, model, x, batch, kw):
    def gen():  # a loader yielding host NumPy chunks of another size
        for i in range(0, len(x), 100):
            yield x[i : i + 100]

    t = time.perf_counter()
    n = 0
    for e in jx.explain_dataset(method, model, gen(), batch_size=batch, progress=False, **kw):
        n += e.values.shape[0]
    assert n == len(x)
    return time.perf_counter() - t


def throughput(n: int, batch: int, reps: int, names: list[str]) -> dict:
    model, x = setup(n)
    dev = [jax.device_put(x[i : i + batch]) for i in range(0, n - n % batch, batch)]
    n_ref = len(dev) * batch
    out = {}
    for name, (method, kw) in methods(x.shape[1]).items():
        if name not in names:
            continue
        reference(method, model, dev[:1], kw)  # compile both paths first
        pipeline(method, model, x[: 2 * batch], batch, kw)
        ref, pipe = [], []
        for _ in range(reps):
            ref.append(n_ref / reference(method, model, dev, kw))
            pipe.append(n / pipeline(method, model, x, batch, kw))
        out[name] = {
            "reference_img_s": max(ref),
            "pipeline_img_s": max(pipe),
            "ratio": max(pipe) / max(ref),
            "all_reference": ref,
            "all_pipeline": pipe,
        }
        print(
            f"{name:22s} reference {max(ref):9.1f} img/s  pipeline {max(pipe):9.1f} img/s  "
            f"ratio {max(pipe) / max(ref):.2f}",
            flush=True,
        )
    return out


COMPILE = textwrap.dedent("""
    import sys, time, json, jax, numpy as np
    t0 = time.perf_counter()
    import jaxplain as jx
    from jaxplain import testing
    if sys.argv[1] != "-":
        jx.enable_compilation_cache(sys.argv[1])
    module = testing.tiny_cnn(n_classes=10, features=(8, 16))
    x = np.asarray(testing.random_images(0, n=128, size=32))
    model = jx.from_linen(module, module.init(jax.random.key(0), x[:1]))
    seg = jx.grid_segments(32, 32, 4)
    res = {}
    for name, kw in [("saliency", {}), ("integrated_gradients", dict(steps=16)),
                     ("lime", dict(segments=seg, n_samples=64, key=jax.random.key(0)))]:
        with testing.count_compiles() as c:
            t = time.perf_counter()
            list(jx.explain_dataset(getattr(jx, name), model, x, batch_size=128, target="predicted",
                                    progress=False, **kw))
            res[name] = {"first_batch_s": time.perf_counter() - t, "compile_s": c["seconds"]}
    res["process_s"] = time.perf_counter() - t0
    print(json.dumps(res))
""")


def compile_times() -> dict:
    cache = tempfile.mkdtemp(prefix="jaxplain_cache_")
    env = dict(os.environ)  # the backend JAX finds (nothing forces the CPU)
    runs = {}
    for label, arg in [("no_cache", "-"), ("cold_cache", cache), ("warm_cache", cache)]:
        p = subprocess.run(
            [sys.executable, "-c", COMPILE, arg],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runs[label] = json.loads(p.stdout.strip().splitlines()[-1])
        print(label, json.dumps(runs[label]), flush=True)
    return runs


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--methods", default="saliency,integrated_gradients,lime")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time processes")
    args = ap.parse_args(argv)
    res = {
        "devices": [str(d) for d in jax.devices()],
        "n": args.n,
        "batch": args.batch,
        "throughput": throughput(args.n, args.batch, args.reps, args.methods.split(",")),
    }
    if not args.no_compile:
        res["compile"] = compile_times()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
