"""The sections of the demo's report: figures, the checks, speed, the network, a global view."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx

from .demo_checks import INK, MARGIN, Checks, summary, table
from .demo_methods import GRADIENT, Context, _block
from .report import Report, _fmt, _fmt_time


def intro(rep: Report, trained, ctx: Context, quick: bool, checks: Checks) -> None:
    n_params = sum(p.size for p in jax.tree.leaves(trained.variables))
    how = "weights loaded from cache" if trained.cached else f"trained in {trained.seconds:.1f}s"
    size = ctx.x.shape[1]
    rep.text(
        f"A {len(trained.module.features)}-layer Flax CNN ({n_params} parameters) trained with "
        f"optax on scikit-learn's digits upsampled to {size}x{size}: test accuracy "
        f"{trained.accuracy:.1%} ({how}). Each method explains the predicted class of "
        f"{len(ctx.x)} test images. Run {'with --quick (reduced budgets)' if quick else 'in full'} "
        f"on {jax.device_count()} {jax.devices()[0].platform.upper()} device(s)."
    )
    rep.text(summary(checks))


def attributions(rep: Report, out: Path, ctx: Context, results, specs, maps, labels) -> None:
    from .. import visualize as viz

    rep.heading("Attributions")
    viz.save(viz.plot_attributions(ctx.x, maps, labels=labels, cell=1.25), out / "attributions.png")
    rep.figure(
        "attributions.png",
        "Rows: test images (true -> predicted (probability)). Columns: methods. "
        "Red supports the predicted class, blue speaks against it; magnitudes are shown in "
        "a sequential map. Each heatmap is clipped at its 99.5th percentile. "
        f"Grad-CAM explains {ctx.layer}.",
    )
    feat = [s.name for s in specs if s.features and s.name in results]
    if feat:
        w = viz.as_array(results[feat[0]])[:2]
        fig = viz.plot_segments(ctx.x[:2], ctx.segments, w, top_k=8, titles=labels[:2])
        viz.save(fig, out / "segments.png")
        rep.figure(
            "segments.png",
            f"{feat[0]} on a grid of 2x2-pixel features: the features, their weights, "
            "and the 8 most important ones (green: for the class, red: against).",
        )


def faithfulness(rep: Report, out: Path, checks: Checks) -> None:
    from .. import visualize as viz

    if not checks.curves:
        return
    rep.heading("Faithfulness: deletion, insertion and the ink")
    dele = {n: d for n, (d, _) in checks.curves.items()}
    ins = {n: i for n, (_, i) in checks.curves.items()}
    viz.save(viz.plot_curves(deletion=dele, insertion=ins), out / "curves.png")
    rep.figure(
        "curves.png",
        "Features (2x2 cells) removed (deletion: set to black) or inserted (insertion: into a "
        "black image) in the order of each method's importance, following the probability "
        "of the predicted class; mean over the images, with a standard-error band. A random "
        "order is the reference.",
    )
    rep.text(
        f"Every method is checked on each image: its deletion AUC must be below a random "
        f"order's (the mean of {checks.n_random} random orders), and more of its positive "
        f"attribution must fall on the ink (pixels of intensity at least {INK}) than the ink's "
        f"share of the image, both by more than {MARGIN:g} standard errors over the images. "
        "A method that fails either check is flagged."
    )
    header, rows = table(checks)
    rep.table(header, rows)


def speed(rep: Report, timings) -> None:
    rep.heading("Speed")
    rep.text(
        "First call includes tracing and XLA compilation; steady state is the second call with the "
        "same shapes (no recompilation). The physical limit is the time of the method's model "
        "evaluations (forward, or forward+backward for gradient methods) run as one jitted batch "
        "of that many images; the ratio is steady state over that limit."
    )
    rep.table(
        ["method", "family", "first call", "steady state", "model evals", "physical limit",
         "ratio to limit"],
        [[t.name, t.family, _fmt_time(t.first_s), _fmt_time(t.steady_s), str(t.n_evals),
          _fmt_time(t.limit_s), _fmt(t.ratio, "x", 2)] for t in timings],
    )


def inside(rep: Report, out: Path, trained, ctx: Context, labels, errors: dict) -> None:
    from .. import visualize as viz

    rep.heading("Inside the network")
    params = trained.variables["params"]
    fig = viz.plot_filters(params["conv0"]["kernel"], title="conv0 filters (3x3, red +, blue -)")
    viz.save(fig, out / "filters.png")
    rep.figure("filters.png", "The first layer's 3x3 filters, on one colour scale.")
    acts = None
    try:
        acts = viz.as_array(jx.layer_activations(ctx.model, ctx.x[:1], layer="conv1"))
    except Exception as e:  # noqa: BLE001
        errors["layer_activations"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        _, state = trained.module.apply(trained.variables, ctx.x[:1], capture_intermediates=True,
                                        mutable=["intermediates"])
        acts = np.asarray(state["intermediates"]["conv1"]["__call__"][0])
    fig = viz.plot_feature_maps(acts, image=ctx.x[0], max_maps=15,
                                title="conv1 feature maps (most active first)")
    viz.save(fig, out / "feature_maps.png")
    rep.figure("feature_maps.png", f"Activations of conv1 on the first image ({labels[0]}).")


def global_view(rep: Report, out: Path, ds, ctx: Context, specs, quiet: bool, errors) -> None:
    """Mean |attribution| per predicted class over many test images (IG when shown)."""
    from tqdm.auto import tqdm

    from .. import visualize as viz

    gmethod = next((s for s in specs if s.attr == "integrated_gradients"), None) or next(
        (s for s in specs if s.family == GRADIENT), None)
    if gmethod is None or not hasattr(jx, "global_importance"):
        return
    n_show = len(ctx.x)  # batches shaped like the explained images reuse their program
    n_glob = (100 if ctx.quick else len(ds.x_test)) // n_show * n_show
    xs = ds.x_test[:n_glob].reshape((-1, n_show) + ds.x_test.shape[1:])
    try:
        t0 = time.perf_counter()
        parts, preds = [], []
        for xb in tqdm(xs, desc="global view", disable=quiet, leave=False):
            xb = jnp.asarray(xb)
            tb = jnp.argmax(ctx.model(xb), -1).astype(jnp.int32)
            c = Context(ctx.model, xb, tb, ctx.references, ctx.segments, ctx.layer, ctx.key,
                        ctx.quick)
            a = viz.as_array(_block(gmethod.call(c)))
            parts.append(a.sum(-1) if a.ndim == 4 else a)
            preds.append(np.asarray(tb))
        gsec = time.perf_counter() - t0
        gi = jx.global_importance(np.concatenate(parts), np.concatenate(preds), n_classes=10)
        fig = viz.plot_importance(
            gi.per_class,
            titles=[f"class {k} (n={int(c)})" for k, c in enumerate(np.asarray(gi.counts))],
            title=f"mean |{gmethod.name}| per predicted class",
        )
        viz.save(fig, out / "global.png")
        rep.heading("Global view")
        rep.figure(
            "global.png",
            f"Mean absolute {gmethod.name} over {n_glob} test images, per predicted class "
            f"({n_glob / gsec:.0f} images/s in batches of {n_show}): where the model looks "
            "for each digit.",
        )
    except Exception as e:  # noqa: BLE001
        errors["global view"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]


def notes(rep: Report, errors: dict, missing: list[str]) -> None:
    if errors or missing:
        rep.heading("Notes")
        for k, v in errors.items():
            rep.text(f"{k}: skipped ({v})")
        if missing:
            rep.text("Not available in this jaxplain: " + ", ".join(missing))
