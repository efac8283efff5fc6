"""Amortised Shapley values (FastSHAP) against KernelSHAP: RMSE vs images per second.

On held-out images of the digits (scikit-learn, 8x8, the project's SmallCNN trained
by `jaxplain.app.zoo`, weights cached), cut into 2x2 patches (d = 16 segments), the
reference is the exact Shapley value by enumeration (`exact_shapley`, 2^16 model
evaluations per image) of the predicted class, with a zero baseline. Measured:

- KernelSHAP at several budgets (model evaluations per image): RMSE against the
  exact values, and images per second of a jitted call on the test batch (compile
  excluded, median of repeats);
- the amortised explainer (`fit_amortised`, stopped at the RMSE of KernelSHAP-1000
  on a validation set of its own, or after `--steps`): its training cost (seconds,
  model evaluations), its RMSE and images per second (`amortised_shap` on a batch of
  `--batch-images`), and the number of images after which training pays off against
  KernelSHAP-1000 (in seconds, and in model evaluations).

Fashion-MNIST (28x28, 4x4 grid of 7x7 patches: d = 16) runs with `--dataset
fashion-mnist` when Debian's `dataset-fashion-mnist` is installed
(`jaxplain.app.data.load_fashion_mnist`); otherwise the script says so and exits 2.

    python -m benchmarks.amortised_bench [--test 32] [--steps 2000] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxplain as jx
from jaxplain.app import data, zoo

BUDGETS = (64, 256, 1000, 3000)
"""KernelSHAP budgets: model evaluations per image (`n_samples` + 2)."""
REFERENCE_BUDGET = 1000


def load(dataset: str):
    """`(Dataset, grid)`: the images and the grid giving 16 segments."""
    if dataset == "digits":
        return data.load_digits(), 4
    if data.fashion_mnist_dir() is None:
        raise FileNotFoundError(
            "Fashion-MNIST is not installed on this machine (Debian's dataset-fashion-mnist "
            "package provides it under /usr/share/datasets/fashion-mnist); this benchmark "
            "reads it through jaxplain.app.data.load_fashion_mnist when present")
    return data.load_fashion_mnist(limit=20_000), 4


def classifier(ds) -> zoo.Trained:
    return zoo.train_classifier(zoo.SmallCNN((16, 32, 32), n_classes=10), ds.x_train,
                                ds.y_train, ds.x_test, ds.y_test, epochs=3, lr=1e-2,
                                cache=zoo.default_cache_dir())


def timed(fn, repeats: int = 3, min_seconds: float = 1.0) -> float:
    """Median seconds of `fn()` after one warm-up call (which compiles)."""
    jax.block_until_ready(fn())
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_seconds and len(times) < 20):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def exact(model, x, target, seg, chunk: int = 8, cache: Path | None = None) -> np.ndarray:
    """Exact Shapley values `(N, 16)`, a few images per call (memory stays small).

    With `cache` (a folder), the values are stored under a digest of the model's
    weights, the images, the targets and the segments, and read back by later runs
    (2^16 evaluations per image: minutes on Fashion-MNIST)."""
    path = None
    if cache is not None:
        h = hashlib.sha1()
        for a in jax.tree.leaves(model) + [x, target, seg]:
            h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
        path = Path(cache) / f"exact-shapley-{h.hexdigest()[:16]}.npy"
        if path.is_file():
            return np.load(path)
    parts = [jx.exact_shapley(model, x[i:i + chunk], target=target[i:i + chunk], segments=seg,
                              progress=False).values for i in range(0, len(x), chunk)]
    values = np.concatenate([np.asarray(p) for p in parts])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, values)
    return values


def kernel_rows(model, x, target, seg, ref) -> list[dict]:
    rows = []
    for budget in BUDGETS:
        def call(budget=budget):
            return jx.kernel_shap(model, x, target=target, segments=seg, key=jax.random.key(0),
                                  n_samples=budget - 2, progress=False)

        e = call()
        seconds = timed(call)
        rows.append({"method": f"KernelSHAP-{budget}", "evals": int(np.max(e.n_evals)),
                     "rmse": rmse(e.values, ref), "images_per_s": len(x) / seconds})
    return rows


def amortised(model, ds, seg, args, val_target_error: float, x_val, t_val, ref_val):
    """Trains the explainer (stopping at `val_target_error`); returns the `AmortisedFit`."""
    x_train = jnp.asarray(ds.x_train[: len(ds.x_train) - len(x_val)])
    schedule = optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.02)
    return jx.fit_amortised(model, x_train, seg, key=jax.random.key(0), steps=args.steps,
                            batch=args.train_batch, n_coalitions=args.coalitions,
                            learning_rate=schedule, eval_every=args.eval_every,
                            features=tuple(args.features), hidden=args.hidden,
                            validation=(x_val, t_val, ref_val), target_error=val_target_error,
                            progress=args.progress)


def measure(args) -> dict:
    ds, grid = load(args.dataset)
    h, w = ds.x_test.shape[1:3]
    seg = np.asarray(jx.grid_segments(h, w, grid))
    t = classifier(ds)
    model = t.model
    x_test = jnp.asarray(ds.x_test[: args.test])
    t_test = np.asarray(jnp.argmax(model(x_test), -1), np.int32)
    x_val = jnp.asarray(ds.x_train[-args.val:])  # held out of the explainer's training
    t_val = np.asarray(jnp.argmax(model(x_val), -1), np.int32)
    t0 = time.perf_counter()
    cache = None if args.no_cache else zoo.default_cache_dir()
    ref = exact(model, x_test, t_test, seg, cache=cache)
    ref_val = exact(model, x_val, t_val, seg, cache=cache)
    exact_s = time.perf_counter() - t0
    rows = kernel_rows(model, x_test, t_test, seg, ref)
    k_val = jx.kernel_shap(model, x_val, target=t_val, segments=seg, key=jax.random.key(1),
                           n_samples=REFERENCE_BUDGET - 2, progress=False)
    goal = rmse(k_val.values, ref_val)  # stop training at KernelSHAP-1000's RMSE
    fit = amortised(model, ds, seg, args, goal, x_val, t_val, ref_val)
    e = jx.amortised_shap(model, x_test, target=t_test, explainer=fit.explainer)
    reps = -(-args.batch_images // len(x_test))
    xb = jnp.concatenate([x_test] * reps)[: args.batch_images]
    tb = np.concatenate([t_test] * reps)[: args.batch_images]
    seconds = timed(lambda: jx.amortised_shap(model, xb, target=tb, explainer=fit.explainer,
                                              progress=False))
    rows.append({"method": "amortised (FastSHAP)", "evals": int(np.max(e.n_evals)),
                 "rmse": rmse(e.values, ref), "images_per_s": len(xb) / seconds,
                 "gap_max": float(np.max(np.abs(np.asarray(e.gap))))})
    fwd = jax.jit(lambda m, z: m(z))
    forward = timed(lambda: fwd(model, xb))
    return dict(dataset=ds.name, image_shape=list(ds.x_test.shape[1:]), d=16,
                accuracy=t.accuracy, n_test=len(x_test), n_val=len(x_val),
                exact_seconds=exact_s, rows=rows, forward_images_per_s=len(xb) / forward,
                validation_goal=goal, fit=dict(steps=fit.steps, n_evals=fit.n_evals,
                                               seconds=fit.seconds, reached=fit.reached,
                                               history=fit.history),
                settings=dict(vars(args)), machine=dict(platform=platform.platform(),
                                                        cpus=os.cpu_count(),
                                                        jax=jax.__version__))


def payoff(res: dict) -> dict:
    """Images after which training pays off against KernelSHAP-1000 (seconds, evaluations)."""
    rows = {r["method"]: r for r in res["rows"]}
    k, a = rows[f"KernelSHAP-{REFERENCE_BUDGET}"], rows["amortised (FastSHAP)"]
    per_image_saved = 1 / k["images_per_s"] - 1 / a["images_per_s"]
    evals_saved = k["evals"] - a["evals"]
    budget = equal_budget(res)
    return dict(speedup=a["images_per_s"] / k["images_per_s"],
                images_seconds=res["fit"]["seconds"] / per_image_saved,
                images_evals=res["fit"]["n_evals"] / evals_saved,
                rmse_ratio=a["rmse"] / k["rmse"], equal_budget=budget,
                images_evals_equal=None if budget is None or budget <= a["evals"]
                else res["fit"]["n_evals"] / (budget - a["evals"]))


def equal_budget(res: dict) -> float | None:
    """KernelSHAP's budget (evaluations per image) with the amortised explainer's RMSE,
    interpolated log-log between the measured budgets (None: outside their range)."""
    ks = [r for r in res["rows"] if r["method"].startswith("KernelSHAP")]
    target = next(r for r in res["rows"] if "amortised" in r["method"])["rmse"]
    for lo, hi in zip(ks, ks[1:]):
        if hi["rmse"] <= target <= lo["rmse"]:
            f = (np.log(target) - np.log(lo["rmse"])) / (np.log(hi["rmse"]) - np.log(lo["rmse"]))
            return float(np.exp(np.log(lo["evals"]) + f * (np.log(hi["evals"])
                                                         - np.log(lo["evals"]))))
    return None


def markdown(res: dict) -> str:
    p = payoff(res)
    f = res["fit"]
    lines = [
        "<!-- generated by benchmarks/amortised_bench.py; do not edit -->",
        f"Amortised Shapley values vs KernelSHAP on {res['n_test']} held-out {res['dataset']} "
        f"images {tuple(res['image_shape'])} (the SmallCNN, test accuracy "
        f"{res['accuracy']:.1%}), d = {res['d']} segments (a 4x4 grid), zero baseline, the "
        "predicted class. RMSE against exact Shapley values by enumeration (2^16 evaluations "
        f"per image, " + (f"{res['exact_seconds']:.0f} s for the test and validation images). "
                         if res["exact_seconds"] >= 1 else "read from the cache of an earlier "
                         "run). ") +
        "Images per second: a jitted call on a batch, compile excluded (median). "
        f"Machine: {res['machine']['cpus']} CPUs ({res['machine']['platform']}), shared.",
        "",
        "| method | model evaluations per image | RMSE vs exact | images / s | "
        "throughput vs KernelSHAP-1000 |",
        "|---|---:|---:|---:|---:|",
    ]
    k_rate = next(r for r in res["rows"] if r["method"] == "KernelSHAP-1000")["images_per_s"]
    for r in res["rows"]:
        lines.append(f"| {r['method']} | {r['evals']} | {r['rmse']:.4f} | "
                     f"{r['images_per_s']:,.0f} | {r['images_per_s'] / k_rate:,.1f}x |")
    lines += [
        "",
        f"The model alone runs at {res['forward_images_per_s']:,.0f} images/s on that batch; "
        "the amortised explainer's 2 evaluations per image are f(x) and f(baseline), its "
        "network pass is not counted as one. Largest efficiency gap: "
        f"{next(r for r in res['rows'] if 'amortised' in r['method'])['gap_max']:.1e}.",
        "",
        f"Training: {f['steps']} steps of {res['settings']['train_batch']} images x "
        f"{res['settings']['coalitions']} coalitions (Adam, cosine decay from "
        f"{res['settings']['lr']:g}; explainer: convs {tuple(res['settings']['features'])}, "
        f"hidden {res['settings']['hidden']}), {f['n_evals']:,} model evaluations "
        f"(validation included), {f['seconds']:.0f} s (compilation included); stopped at "
        f"the validation RMSE of KernelSHAP-1000 ({res['validation_goal']:.4f} on "
        f"{res['n_val']} validation images): {'yes' if f['reached'] else 'no, step limit'}. "
        f"Validation RMSE by step: "
        + ", ".join(f"{s}: {e:.4f}" for s, e in f["history"]) + ".",
        "",
        f"Against KernelSHAP-1000: {p['speedup']:,.0f}x its throughput at "
        f"{p['rmse_ratio']:.2f}x its RMSE (goal: same RMSE at >= 100x). Training pays off "
        f"after {p['images_seconds']:,.0f} images in wall time, or after "
        f"{p['images_evals']:,.0f} images in model evaluations.",
        "",
        "KernelSHAP reaches the amortised explainer's RMSE at about "
        + (f"{p['equal_budget']:,.0f} model evaluations per image (log-log interpolation "
           "between the budgets above)." if p["equal_budget"] is not None else
           "a budget outside the range measured.")
        + ("" if p["images_evals_equal"] is None else
           f" Against KernelSHAP at that budget (the same accuracy), training pays off after "
           f"{p['images_evals_equal']:,.0f} images in model evaluations."),
    ]
    return "\n".join(lines) + "\n"


DATASETS = {"digits": "digits", "fashion-mnist": "Fashion-MNIST"}
"""`--dataset` choices and their names in the README summary."""


def stem(dataset: str) -> str:
    """The results files' name for `dataset` (`<stem>.md`, `<stem>.json`)."""
    return "amortised_bench" if dataset == "digits" else f"amortised_bench_{dataset}"


def readme_summary(results: dict[str, dict]) -> str:
    """The README's block: one table with a column pair per dataset measured
    (`{dataset: result}`), and whether the goal is met on each."""
    names = [n for n in DATASETS if n in results]
    links = ", ".join(f"[{DATASETS[n]}](benchmarks/results/{stem(n)}.md)" for n in names)
    lines = [
        f"Amortised Shapley values (FastSHAP) against KernelSHAP on held-out images, d = 16, "
        f"RMSE against exact values and images per second (details and training cost: "
        f"{links}).",
        "",
        "| method | " + " | ".join(f"{DATASETS[n]} RMSE | {DATASETS[n]} images/s"
                                   for n in names) + " |",
        "|---|" + "---:|---:|" * len(names),
    ]
    methods = [r["method"] for r in results[names[0]]["rows"]]
    for m in methods:
        cells = []
        for n in names:
            r = next((r for r in results[n]["rows"] if r["method"] == m), None)
            cells += ["-", "-"] if r is None else [f"{r['rmse']:.4f}",
                                                  f"{r['images_per_s']:,.0f}"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    goal = []
    for n in names:
        p = payoff(results[n])
        met = p["rmse_ratio"] <= 1.0 and p["speedup"] >= 100
        goal.append(f"{DATASETS[n]}: {p['speedup']:,.0f}x KernelSHAP-1000's throughput at "
                    f"{p['rmse_ratio']:.2f}x its RMSE ({'met' if met else 'not met'})")
    lines += ["", "Goal, the RMSE of KernelSHAP-1000 at >= 100x its throughput: "
              + "; ".join(goal) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.amortised_bench",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=("digits", "fashion-mnist"), default="digits")
    ap.add_argument("--test", type=int, default=32, help="held-out test images")
    ap.add_argument("--val", type=int, default=8, help="validation images (exact values)")
    ap.add_argument("--steps", type=int, default=4000, help="most training steps")
    ap.add_argument("--features", type=int, nargs="+", default=[32, 64],
                    help="the explainer's conv channels")
    ap.add_argument("--hidden", type=int, default=256, help="the explainer's hidden width")
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--coalitions", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3,
                    help="Adam's peak step size (cosine decay to 2%% of it over --steps)")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--batch-images", type=int, default=512,
                    help="images per amortised call when timing its throughput")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--no-cache", action="store_true",
                    help="compute the exact values again (not read from the zoo's cache folder)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the table from the JSON of the last run")
    args = ap.parse_args(argv)
    out = Path(args.out)
    name = stem(args.dataset)
    if args.render:
        res = json.loads((out / f"{name}.json").read_text())
    else:
        try:
            res = measure(args)
        except FileNotFoundError as e:
            print(f"amortised_bench: {e}", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    res["payoff"] = payoff(res)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1, default=str))
    text = markdown(res)
    (out / f"{name}.md").write_text(text)
    results = {n: json.loads((out / f"{stem(n)}.json").read_text()) for n in DATASETS
               if (out / f"{stem(n)}.json").is_file()}
    (out / "amortised_bench_readme.md").write_text(readme_summary(results))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
