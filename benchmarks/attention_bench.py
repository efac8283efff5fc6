"""Attention methods on the zoo's ViT: cost against the limit, and which maps are faithful.

    python -m benchmarks.attention_bench [--out DIR] [--quick]

The methods are read from the registry (family "attention"); nothing here lists
them. On the zoo's vision transformer (`jaxplain.app.zoo.vit_classifier`:
Fashion-MNIST when installed, else the digits), for `N` test images:

- **cost**: each method's warm seconds against its limit, the model evaluations
  it needs (the registry's count, one per example) run as one jitted batch: a
  forward pass for methods without a target, a forward and a backward pass of
  the target for the others. `ratio = seconds / limit`.
- **faithfulness**: deletion (lower is better) and insertion (higher is better)
  AUCs over the patches (`patch_segments`: one feature per patch token), for
  every attention method that gives a map, the raw attention of the last layer
  (class token's row, heads averaged), integrated gradients, KernelSHAP over the
  patches, and random maps (the mean of 8 draws). A method *beats random* when
  its mean AUC is better than random's by more than two standard errors of the
  paired per-image difference.

Writes `attention_bench.json`, `attention_bench.md` and `attention_maps.png` to
`--out` (default `benchmarks/results`). Timings are medians of warm calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain._core import registry
from jaxplain.app import zoo

SETTINGS = {"token_grad_cam": {"layer": "block1/norm1"}}
"""Arguments a method needs beyond `model, x, target` (the ViT's layer names)."""


def timed(fn, repeats: int = 5) -> tuple[float, float, object]:
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    while len(times) < repeats or (sum(times) < 1.0 and len(times) < 50):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), first, out


def limits(model, x, t):
    fwd = jax.jit(lambda m, z: m(z))
    grad = jax.jit(lambda m, z, tt: jax.grad(
        lambda v: jnp.sum(jnp.take_along_axis(m(v), tt[:, None], 1)))(z))
    return (lambda: fwd(model, x)), (lambda: grad(model, x, t))


def _call(entry, model, x, t, **extra):
    kw = dict(SETTINGS.get(entry.name, {}), progress=False, **extra)
    if "target" in entry.signature.parameters:
        kw["target"] = t
    return entry.fn(model, x, **kw)


def cost_rows(model, x, t, repeats):
    fwd, fwdbwd = limits(model, x, t)
    lim_f, _, _ = timed(fwd, repeats)
    lim_b, _, _ = timed(fwdbwd, repeats)
    rows = []
    for entry in registry.entries("attention"):
        s, first, out = timed(lambda e=entry: _call(e, model, x, t), repeats)
        backward = "target" in entry.signature.parameters
        per = int(np.max(np.asarray(out.n_evals)))
        lim = (lim_b if backward else lim_f) * per
        rows.append(dict(method=entry.name, n=len(x), evals_per_example=per,
                         limit_kind="fwd+bwd" if backward else "fwd", seconds=s, first_s=first,
                         limit_s=lim, ratio=s / lim))
    return rows


def maps(model, x, t, seg, key, quick):
    out = {}
    for entry in registry.entries("attention"):
        if entry.name == "attention_maps":
            w = np.asarray(_call(entry, model, x, t).values)  # (N, L, H, T, T)
            d = int(seg.max()) + 1
            out["raw attention (last layer)"] = w[:, -1].mean(1)[:, 0, 1:].reshape(len(x), d)
            continue
        out[entry.name] = np.asarray(_call(entry, model, x, t).values)
    out["integrated_gradients"] = np.asarray(jx.integrated_gradients(
        model, x, target=t, steps=16 if quick else 64, progress=False).values).sum(-1)
    out["kernel_shap"] = np.asarray(jx.kernel_shap(
        model, x, target=t, segments=seg, n_samples=256 if quick else 2048, key=key,
        progress=False).values)
    return out


def faithfulness(model, x, t, seg, attributions, key, n_random=8):
    d = int(seg.max()) + 1
    curves = {}
    for name, a in attributions.items():
        curves[name] = [np.asarray(jx.deletion(model, x, a, target=t, segments=seg, steps=d,
                                               progress=False).auc),
                        np.asarray(jx.insertion(model, x, a, target=t, segments=seg, steps=d,
                                                progress=False).auc)]
    rand = [[], []]
    for k in jax.random.split(key, n_random):
        a = np.asarray(jax.random.uniform(k, (len(x), d)))
        rand[0].append(np.asarray(jx.deletion(model, x, a, target=t, segments=seg, steps=d,
                                              progress=False).auc))
        rand[1].append(np.asarray(jx.insertion(model, x, a, target=t, segments=seg, steps=d,
                                               progress=False).auc))
    r_del, r_ins = np.mean(rand[0], 0), np.mean(rand[1], 0)
    rows = [dict(method="random (mean of 8)", deletion=float(r_del.mean()),
                 insertion=float(r_ins.mean()), beats_random_deletion=None,
                 beats_random_insertion=None)]
    for name, (dele, ins) in curves.items():
        rows.append(dict(method=name, deletion=float(dele.mean()), insertion=float(ins.mean()),
                         beats_random_deletion=_beats(r_del - dele),
                         beats_random_insertion=_beats(ins - r_ins)))
    return rows


def _beats(diff: np.ndarray) -> bool:
    """Better than random by more than two standard errors of the paired difference."""
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    return bool(diff.mean() > 2 * se)


def markdown(meta, cost, faith) -> str:
    lines = [f"# Attention methods on the zoo's ViT ({meta['data']}, test accuracy "
             f"{meta['accuracy']:.3f}, {meta['n']} images)", "",
             "## Cost against the limit", "",
             "| method | evals/example | limit | seconds | limit s | ratio |",
             "|---|---:|---|---:|---:|---:|"]
    for r in cost:
        lines.append(f"| `{r['method']}` | {r['evals_per_example']} | {r['limit_kind']} | "
                     f"{r['seconds']:.4f} | {r['limit_s']:.4f} | {r['ratio']:.2f} |")
    lines += ["", "## Deletion / insertion over patches", "",
              "Deletion AUC: lower is better; insertion AUC: higher is better. *beats random*: "
              "better than random maps by more than two standard errors (paired over images).",
              "", "| method | deletion | beats random | insertion | beats random |",
              "|---|---:|:-:|---:|:-:|"]
    for r in faith:
        yes = {True: "yes", False: "no", None: ""}
        lines.append(f"| {r['method']} | {r['deletion']:.4f} | "
                     f"{yes[r['beats_random_deletion']]} | {r['insertion']:.4f} | "
                     f"{yes[r['beats_random_insertion']]} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    trained, ds = zoo.vit_classifier(cache=zoo.default_cache_dir())
    n = 32 if args.quick else 128
    x = jnp.asarray(ds.x_test[:n])
    model = trained.model
    t = jnp.argmax(jax.jit(lambda m, z: m(z))(model, x), -1).astype(jnp.int32)
    h, w = x.shape[1:3]
    seg = jx.patch_segments(h, w, trained.module.patch)
    key = jax.random.key(0)
    meta = dict(data=ds.name, accuracy=trained.accuracy, train_s=trained.seconds,
                cached=trained.cached, n=n, backend=jax.default_backend())
    cost = cost_rows(model, x, t, 3 if args.quick else 7)
    attributions = maps(model, x, t, seg, key, args.quick)
    faith = faithfulness(model, x, t, seg, attributions, jax.random.key(1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = dict(meta=meta, cost=cost, faithfulness=faith)
    (out / "attention_bench.json").write_text(json.dumps(result, indent=1))
    (out / "attention_bench.md").write_text(markdown(meta, cost, faith))
    fig = jx.visualize.plot_attributions(
        np.asarray(x[:4]), {k: v[:4] for k, v in attributions.items()}, segments=seg,
        labels=[f"{ds.classes[int(c)]}" for c in np.asarray(t[:4])], sign="absolute")
    jx.visualize.save(fig, out / "attention_maps.png")
    print(markdown(meta, cost, faith))
    return result


if __name__ == "__main__":
    main()
