"""The demo's attention section: the zoo's vision transformer and which maps are faithful.

The attention methods come from the registry (family "attention"). Their maps,
the raw attention of the last layer (the class token's row, heads averaged),
integrated gradients and KernelSHAP over the patches are scored by deletion and
insertion over the patches (`patch_segments`: one feature per patch token)
against random maps. `benchmarks/attention_bench.py` runs the same comparison
on more images and adds the cost of every method against the limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain._core import registry

from . import zoo
from .report import Report

SETTINGS = {"token_grad_cam": {"layer": "block1/norm1"}}
"""Arguments a method needs beyond `model, x, target` (the zoo ViT's layer names)."""


def call(entry: registry.Entry, model: Any, x: Any, t: Any) -> jx.Explanation:
    """The registered attention method `entry` on the zoo's ViT, explaining classes `t`."""
    kw = dict(SETTINGS.get(entry.name, {}), progress=False)
    if "target" in entry.signature.parameters:
        kw["target"] = t
    return entry.fn(model, x, **kw)


def vit_maps(model, x, t, seg, key, quick: bool) -> dict[str, np.ndarray]:
    """`{method: map}` for every attention method, the raw last-layer attention, IG and
    KernelSHAP over the patches (pixel maps `(N, H, W)` or patch values `(N, d)`)."""
    out = {}
    d = int(np.max(seg)) + 1
    for entry in registry.entries("attention"):
        values = np.asarray(call(entry, model, x, t).values)
        if entry.name == "attention_maps":  # (N, layers, heads, T, T)
            out["raw attention (last layer)"] = values[:, -1].mean(1)[:, 0, 1:].reshape(len(x), d)
        else:
            out[entry.name] = values
    out["integrated_gradients"] = np.asarray(jx.integrated_gradients(
        model, x, target=t, steps=16 if quick else 64, progress=False).values).sum(-1)
    out["kernel_shap"] = np.asarray(jx.kernel_shap(
        model, x, target=t, segments=seg, n_samples=256 if quick else 2048, key=key,
        progress=False).values)
    return out


def per_patch(a: Any, seg: np.ndarray) -> np.ndarray:
    """Per-patch scores `(N, d)`: patch values as they are, pixel maps `(N, H, W[, C])`
    summed over each patch (as the curves score pixel maps with `segments=`). One shape
    for every map: the curves compile once."""
    a = np.asarray(a, np.float32)
    if a.ndim == 2:
        return a
    a = a.sum(-1) if a.ndim == 4 else a
    d = int(np.max(seg)) + 1
    return a.reshape(len(a), -1) @ np.eye(d, dtype=np.float32)[np.asarray(seg).reshape(-1)]


def _aucs(model, x, t, seg, a, d) -> tuple[np.ndarray, np.ndarray]:
    # both curves from a black image (removed patches are zero; insertion starts from zero):
    # the baseline of integrated gradients and KernelSHAP here, and on 8x8 digits the
    # default blurred start of insertion is still recognised, which flattens its curves
    kw = dict(target=t, segments=seg, steps=d, baseline="zero", progress=False)
    a = per_patch(a, seg)
    return (np.asarray(jx.deletion(model, x, a, **kw).auc),
            np.asarray(jx.insertion(model, x, a, **kw).auc))


def patch_faithfulness(model, x, t, seg, maps: dict, key, n_random: int = 8) -> list[dict]:
    """Deletion and insertion AUCs over the patches (removed patches are zero, insertion
    starts from a zero image), per method and for random maps.

    A method *beats random* when its mean AUC is better than the random maps' (the
    mean of `n_random` draws per image) by more than two standard errors of the
    paired per-image difference (deletion: lower is better; insertion: higher).
    """
    d = int(np.max(seg)) + 1
    draws = [_aucs(model, x, t, seg, np.asarray(jax.random.uniform(k, (len(x), d))), d)
             for k in jax.random.split(key, n_random)]
    r_del = np.mean([a for a, _ in draws], 0)
    r_ins = np.mean([b for _, b in draws], 0)
    rows = [dict(method=f"random (mean of {n_random})", deletion=float(r_del.mean()),
                 insertion=float(r_ins.mean()), beats_random_deletion=None,
                 beats_random_insertion=None)]
    for name, a in maps.items():
        dele, ins = _aucs(model, x, t, seg, a, d)
        rows.append(dict(method=name, deletion=float(dele.mean()), insertion=float(ins.mean()),
                         beats_random_deletion=_beats(r_del - dele),
                         beats_random_insertion=_beats(ins - r_ins)))
    return rows


def _beats(diff: np.ndarray) -> bool:
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.inf
    return bool(diff.mean() > 2 * se)


def faithfulness_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    yes = {True: "yes", False: "no", None: ""}
    return (["method", "deletion AUC (lower: better)", "beats random",
             "insertion AUC (higher: better)", "beats random"],
            [[r["method"], f"{r['deletion']:.3f}", yes[r["beats_random_deletion"]],
              f"{r['insertion']:.3f}", yes[r["beats_random_insertion"]]] for r in rows])


def section(rep: Report, out: Path, *, quick: bool, cache: Path, seed: int, say) -> None:
    """Trains (or loads) the zoo's ViT, explains test images, scores the maps."""
    from .. import visualize as viz

    trained, ds = zoo.vit_classifier(epochs=4 if quick else None, cache=cache)
    say(("loaded cached" if trained.cached else "trained")
        + f" ViT in {trained.seconds:.1f}s: test accuracy {trained.accuracy:.1%}")
    model, n = trained.model, 16 if quick else 64
    x = jnp.asarray(ds.x_test[:n])
    t = jnp.argmax(jax.jit(lambda m, z: m(z))(model, x), -1).astype(jnp.int32)
    seg = jx.patch_segments(x.shape[1], x.shape[2], trained.module.patch)
    key = jax.random.key(seed)
    maps = vit_maps(model, x, t, seg, key, quick)
    rows = patch_faithfulness(model, x, t, seg, maps, jax.random.fold_in(key, 1))
    rep.heading("Attention: a vision transformer")
    m = trained.module
    rep.text(f"The zoo's ViT ({m.depth} pre-norm blocks of width {m.dim}, {m.heads} heads, "
             f"{m.patch}x{m.patch} patches and a class token; Flax attention modules) on "
             f"{ds.name}: test accuracy {trained.accuracy:.1%}. Attention weights are read "
             "from the model's program without editing it.")
    labels = [ds.classes[int(c)] for c in np.asarray(t[:4])]
    viz.save(viz.plot_attributions(np.asarray(x[:4]), {k: v[:4] for k, v in maps.items()},
                                   segments=seg, labels=labels, sign="absolute", cell=1.25),
             out / "attention.png")
    rep.figure("attention.png", "Rows: test images (predicted class). Columns: the attention "
               "methods, the last layer's raw attention of the class token, integrated "
               "gradients and KernelSHAP over the patches (magnitudes).")
    rep.text(f"Deletion and insertion over the {int(np.max(seg)) + 1} patches, on {n} test "
             "images, against random patch orders (beats random: better by more than two "
             "standard errors of the paired difference).")
    rep.table(*faithfulness_table(rows))
