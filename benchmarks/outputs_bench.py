"""Output explanations: their cost against the physical limit, and anchors against alibi.

    python -m benchmarks.outputs_bench [--out DIR] [--quick] [--alibi-python PATH]

Rows (one JSON record each, `outputs_bench.json` in `--out`):

- `decision_plane`: 65 536 grid points (256 x 256) through one digit-sized image;
  limit: the same 65 536 forward passes of the model, chunked, in one program.
- `counterfactual` (DeepFool to another class, DeepFool to a given class, optax):
  seconds per example; limit: the evaluations it spent (forward + backward) as
  one batch.
- `anchors`: seconds per example and evaluations; limit: those forward passes as
  one batch. With `--alibi-python` (a Python where alibi is installed, e.g. a
  separate venv: alibi 0.9.6 pins numpy < 2), alibi's `AnchorImage` explains the
  same rule (class 1 when two known cells are both kept) on the same cells with
  the same settings, and its predictor calls are counted.
- `over_weights` (5 members; prediction, saliency, integrated gradients): against a
  Python loop over the members and against the members' evaluations as one batch
  of one model (the goal is <= 1.2x).

Timings are medians of warm calls (compile excluded; `first_s` includes it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain.app import data, zoo

H = 16
CELLS = jx.grid_segments(H, H, 4)  # 16 cells of 4x4 pixels
A, B = 5, 10  # the two cells of the anchors rule
MIN_TIMED_S = 1.0
"""Cheap calls repeat (up to 50 times) until their timed calls add up to this."""


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """`(median warm seconds, first-call seconds, result)` of `fn()`: at least `repeats`
    warm calls, more while they add up to less than `MIN_TIMED_S`."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    while len(times) < repeats or (sum(times) < MIN_TIMED_S and len(times) < 50):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), first, out


def digits_model():
    """A SmallCNN trained on the digits (3 epochs; weights cached), and test images."""
    ds = data.load_digits(size=H)
    t = zoo.train_classifier(zoo.SmallCNN((16, 32, 32), n_classes=10), ds.x_train, ds.y_train,
                             ds.x_test, ds.y_test, epochs=3, lr=1e-2,
                             cache=zoo.default_cache_dir())
    return t.module, t.model, jnp.asarray(ds.x_test[:16])


def forward_limit(model, x, total: int, chunk: int = 1024):
    """Seconds of `total` forward passes of `model` on copies of `x`, chunked, one program."""
    reps = -(-total // chunk)
    xs = jnp.broadcast_to(x[:1], (chunk,) + x.shape[1:]) + 0.0

    @jax.jit
    def run(m, z):
        return jax.lax.map(lambda i: jnp.sum(m(z + i * 1e-6)), jnp.arange(reps, dtype=jnp.float32))

    return lambda: run(model, xs)


def grad_limit(model, x, total: int):
    """Seconds of `total` forward + backward passes (target scalar) as one batch."""
    xs = jnp.broadcast_to(x[:1], (max(total, 1),) + x.shape[1:]) + 0.0
    run = jax.jit(lambda m, z: jax.grad(lambda v: jnp.sum(m(v)[:, 0]))(z))
    return lambda: run(model, xs)


def row(case, method, n, per, seconds, first, limit=None, **extra):
    r = dict(case=case, method=method, n_examples=n, n_evals_per_example=per, seconds=seconds,
             seconds_per_example=seconds / n, first_s=first, limit_s=limit,
             ratio=None if limit is None else seconds / limit)
    r.update(extra)
    return r


def bench_plane(model, x, repeats):
    dirs = jnp.asarray(np.random.default_rng(0).normal(size=(2, H, H, 1)), jnp.float32)
    s, first, _ = timed(lambda: jx.decision_plane(model, x[:1], directions=dirs, resolution=256,
                                                  progress=False), repeats)
    lim, _, _ = timed(forward_limit(model, x, 65_536), repeats)
    return [row("digits 16x16 CNN", "decision_plane 256x256", 1, 65_536, s, first, lim)]


def bench_counterfactual(model, x, repeats):
    rows = []
    goal = (np.asarray(model(x)).argmax(1) + 1) % 10
    for name, kw in [("deepfool other", dict(target_class="other")),
                     ("deepfool targeted", dict(target_class=goal)),
                     ("optax targeted", dict(target_class=goal, solver="optax", steps=100))]:
        s, first, cf = timed(lambda kw=kw: jx.counterfactual(model, x, bounds=(0.0, 1.0),
                                                             progress=False, **kw), repeats)
        per = float(np.mean(np.asarray(cf.n_evals)))
        lim, _, _ = timed(grad_limit(model, x, int(round(per * len(x)))), repeats)
        rows.append(row("digits 16x16 CNN", f"counterfactual {name}", len(x), per, s, first,
                        lim, success=float(np.mean(np.asarray(cf.success))),
                        distance=float(np.median(np.asarray(cf.distance)))))
    return rows


def _checker(h: int = H) -> np.ndarray:
    """A checkerboard image: every 4x4 cell has mean 0.5 and is 'present' while unchanged."""
    i = np.add.outer(np.arange(h), np.arange(h)) % 2
    return i.astype(np.float32)[None, :, :, None]


def and_rule(z):
    """Class 1 exactly when cells A and B are unchanged (a mean-filled cell has no contrast)."""
    def present(s):
        r, c = 4 * (s // 4), 4 * (s % 4)
        return jnp.std(z[:, r:r + 4, c:c + 4, 0], axis=(1, 2)) > 0.25
    on = present(A) & present(B)
    return jnp.stack([~on, on], -1).astype(jnp.float32)


def bench_anchors(model, x, repeats, alibi_python):
    rows = []
    kw = dict(segments=CELLS, key=jax.random.key(0), progress=False)
    # removed cells become black (with the default mean colour the digits CNN keeps its
    # class under any perturbation: the empty anchor holds)
    s, first, a = timed(lambda: jx.anchors(model, x, baseline=0.0, **kw), repeats)
    per = float(np.mean(np.asarray(a.n_evals)))
    lim, _, _ = timed(forward_limit(model, x, int(per * len(x))), repeats)
    rows.append(row("digits 16x16 CNN", "anchors (16 cells, black)", len(x), per, s, first, lim,
                    valid=float(np.mean(np.asarray(a.valid))),
                    size=float(np.mean(np.asarray(a.anchor).sum(1)))))
    xc = jnp.asarray(_checker())
    s, first, a = timed(lambda: jx.anchors(and_rule, xc, **kw), repeats)
    found = np.nonzero(np.asarray(a.anchor[0]))[0].tolist()
    rows.append(row("AND rule, checkerboard", "anchors jaxplain", 1, int(a.n_evals[0]), s, first,
                    anchor=found, precision=float(a.precision[0]),
                    coverage=float(a.coverage[0])))
    if alibi_python:
        rows.append(alibi_anchor(alibi_python))
    return rows


ALIBI_SCRIPT = r"""
import json, sys, time
import numpy as np
from alibi.explainers import AnchorImage
A, B, H = {a}, {b}, {h}
cells = (np.arange(H)[:, None] // 4) * 4 + np.arange(H)[None, :] // 4
calls = [0]
def present(z, s):
    r, c = 4 * (s // 4), 4 * (s % 4)
    return z[:, r:r + 4, c:c + 4, 0].std(axis=(1, 2)) > 0.25
def predict(z):
    calls[0] += len(z)
    on = present(z, A) & present(z, B)
    return np.stack([~on, on], -1).astype(np.float32)
x = (np.add.outer(np.arange(H), np.arange(H)) % 2).astype(np.float32)[:, :, None]
explainer = AnchorImage(predict, (H, H, 1), segmentation_fn=lambda im: cells, seed=0)
calls[0] = 0
t0 = time.perf_counter()
e = explainer.explain(x, p_sample=0.5, threshold=0.95, delta=0.1, tau=0.15, batch_size=100,
                      coverage_samples=10000, min_samples_start=100)
s = time.perf_counter() - t0
print(json.dumps(dict(anchor=sorted(int(f) for f in e.data["raw"]["feature"]),
                      precision=float(np.atleast_1d(e.precision)[0]),
                      coverage=float(e.coverage), n_evals=calls[0], seconds=s)))
"""


def alibi_anchor(python: str) -> dict:
    """alibi's AnchorImage on the AND rule, run in `python` (its own environment)."""
    code = ALIBI_SCRIPT.format(a=A, b=B, h=H)
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=900,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        return row("AND rule, checkerboard", "anchors alibi AnchorImage", 1, None, float("nan"),
                   None, error=str(e)[-300:])
    return row("AND rule, checkerboard", "anchors alibi AnchorImage", 1, r["n_evals"],
               r["seconds"], None, anchor=r["anchor"], precision=r["precision"],
               coverage=r["coverage"])


def bench_over_weights(module, x, repeats, members: int = 5):
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *[
        module.init(jax.random.key(i), jnp.zeros((1, H, H, 1))) for i in range(members)])
    variables = [jax.tree.map(lambda v, i=i: v[i], stacked) for i in range(members)]
    rows = []
    for name, method, kw in [("prediction", None, {}), ("saliency", jx.saliency, dict(target=0)),
                             ("integrated_gradients", jx.integrated_gradients,
                              dict(target=0, steps=16)),
                             ("saliency, vmap", jx.saliency, dict(target=0,
                                                                   member_batch=members))]:
        s, first, r = timed(lambda m=method, kw=kw: jx.over_weights(m, module.apply, stacked, x,
                                                                    **kw), repeats)
        if method is None:
            loop = lambda: [jx.from_linen(module, v)(x) for v in variables]  # noqa: E731
            per = 1
            lim_fn = forward_limit(jx.from_linen(module, variables[0]), x, members * len(x),
                                   chunk=members * len(x))
        else:
            own = {k: v for k, v in kw.items() if k != "member_batch"}
            loop = lambda m=method, kw=own: [m(jx.from_linen(module, v), x, progress=False, **kw)  # noqa: E731
                                             for v in variables]
            per = int(np.asarray(r.results.n_evals).max())
            lim_fn = grad_limit(jx.from_linen(module, variables[0]), x, members * len(x) * per)
        loop_s, _, _ = timed(loop, repeats)
        lim, _, _ = timed(lim_fn, repeats)
        rows.append(row("digits 16x16 CNN", f"over_weights {name} x{members}", len(x), per, s,
                        first, lim, loop_s=loop_s, vs_loop=s / loop_s))
    return rows


def table(rows: list[dict]) -> str:
    head = "| case | method | N | evals/ex | s/example | limit ratio | notes |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        notes = {k: r[k] for k in ("vs_loop", "anchor", "precision", "coverage", "success",
                                   "distance", "valid", "size", "error") if k in r}
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        per = "-" if r["n_evals_per_example"] is None else f"{r['n_evals_per_example']:.0f}"
        lines.append(f"| {r['case']} | {r['method']} | {r['n_examples']} | {per} | "
                     f"{r['seconds_per_example'] * 1e3:.2f} ms | {ratio} | "
                     + ", ".join(f"{k}={_short(v)}" for k, v in notes.items()) + " |")
    return "\n".join(lines)


def _short(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/raw")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and examples")
    default_alibi = Path(__file__).resolve().parents[1] / ".venv-alibi" / "bin" / "python"
    ap.add_argument("--alibi-python", default=str(default_alibi) if default_alibi.exists() else "",
                    help="a Python with alibi installed (empty: skip the alibi row)")
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else 7
    module, model, x = digits_model()
    rows = bench_plane(model, x, repeats)
    rows += bench_counterfactual(model, x[: 4 if args.quick else 16], repeats)
    rows += bench_anchors(model, x[:4], repeats, args.alibi_python)
    rows += bench_over_weights(module, x, repeats)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = dict(backend=jax.default_backend(), jax=jax.__version__, rows=rows,
                  load_average=list(os.getloadavg()), cpu_count=os.cpu_count())
    (out / "outputs_bench.json").write_text(json.dumps(record, indent=1, default=str))
    print(table(rows))
    print("wrote", out / "outputs_bench.json")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
