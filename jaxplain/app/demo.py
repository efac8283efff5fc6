"""`jaxplain demo`: train a small Flax CNN on digits, explain it, evaluate, write a report.

The demo uses whatever method families the installed jaxplain offers (it checks
`hasattr(jaxplain, name)`), so it keeps working when one is missing or fails:
that method is skipped with a note in the report.

Steps: load scikit-learn's digits (upsampled to 16x16), train the CNN with optax or
load its cached weights, explain a few test images with every method, time each
method (first call with compilation, then steady state) against the physical
limit of the model evaluations it needs, score the explanations with the
deletion/insertion metrics, and write figures plus `report.md` and `index.html`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx

from . import data as D
from . import zoo
from .demo_methods import (
    CAM,
    GRADIENT,
    PERTURBATION,
    Context,
    LimitTimer,
    MethodSpec,
    Timing,
    _block,
    available,
    method_specs,
    pixel_maps,
    run_methods,
)
from .report import Report, _fmt, _fmt_time

__all__ = [
    "CAM",
    "GRADIENT",
    "PERTURBATION",
    "Context",
    "LimitTimer",
    "MethodSpec",
    "Report",
    "Timing",
    "available",
    "method_specs",
    "pixel_maps",
    "run",
    "run_methods",
]


def run(
    out: str | os.PathLike = "jaxplain_demo",
    *,
    quick: bool = False,
    quiet: bool = False,
    cache: str | os.PathLike | None = None,
    seed: int = 0,
    compile_cache: bool = False,
) -> Path:
    """Runs the demo and returns the path of `report.md` (an `index.html` sits next to it).

    Args:
      out: output folder (created).
      quick: smaller training and sample budgets (well under a minute on 2 CPU cores).
      quiet: no progress bars and no messages.
      cache: where trained weights are cached (default `$JAXPLAIN_CACHE` or
        `~/.cache/jaxplain`).
      seed: seed of the training run and of the stochastic methods.
      compile_cache: turn on JAX's persistent compilation cache under `cache/xla`
        (process-wide), so a second run skips compilation.
    """
    from .. import visualize as viz

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    cache = Path(cache) if cache is not None else zoo.default_cache_dir()
    if compile_cache and hasattr(jx, "enable_compilation_cache"):
        try:
            jx.enable_compilation_cache(cache / "xla", min_compile_time_secs=0.2)
        except (OSError, ValueError):
            pass

    # ---- data and model ----------------------------------------------------------------
    size = 16
    ds = D.load_digits(size=size)
    module = zoo.SmallCNN((16, 32, 32), n_classes=10)
    epochs = 4 if quick else 10
    say(
        f"jaxplain demo: digits {ds.x_train.shape[1]}x{ds.x_train.shape[2]}, "
        f"{len(ds.x_train)} train / {len(ds.x_test)} test images"
    )
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs, desc="training", disable=quiet, leave=False)
    trained = zoo.train_classifier(
        module,
        ds.x_train,
        ds.y_train,
        ds.x_test,
        ds.y_test,
        epochs=epochs,
        lr=1e-2,
        seed=seed,
        cache=cache,
        progress=lambda e, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")),
    )
    bar.close()
    zoo.save(
        out / "model.ckpt",
        module,
        trained.variables,
        ds.x_train.shape[1:],
        {"accuracy": trained.accuracy, "classes": list(ds.classes)},
    )
    say(
        ("loaded cached" if trained.cached else "trained")
        + f" CNN in {trained.seconds:.1f}s: test accuracy {trained.accuracy:.1%}"
    )
    model = trained.model

    n_show = 4 if quick else 8
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds.x_test), n_show, replace=False))
    x = jnp.asarray(ds.x_test[idx])
    probs = np.asarray(jax.nn.softmax(model(x)))
    pred = probs.argmax(-1).astype(np.int32)
    labels = [
        f"{ds.y_test[i]} -> {p} ({probs[j, p]:.2f})" for j, (i, p) in enumerate(zip(idx, pred))
    ]
    segments = jx.grid_segments(size, size, 8)
    ctx = Context(
        model,
        x,
        jnp.asarray(pred),
        ds.x_train[rng.choice(len(ds.x_train), 64, replace=False)],
        segments,
        trained.last_conv,
        jax.random.key(seed),
        quick,
    )

    # ---- explain and time ---------------------------------------------------------------
    all_specs = method_specs(quick)
    specs = available(all_specs, quick)
    missing = [s.attr for s in all_specs if not hasattr(jx, s.attr)]
    limits = LimitTimer(model, x, ctx.target)
    results, timings, errors = run_methods(specs, ctx, limits, progress=not quiet)
    say(
        f"explained {n_show} images with {len(results)} methods"
        + (f" ({len(errors)} failed: {', '.join(errors)})" if errors else "")
    )
    maps = pixel_maps(results, specs, segments, (size, size))

    rep = Report("jaxplain demo: explaining a CNN on digits")
    n_params = sum(p.size for p in jax.tree.leaves(trained.variables))
    how = "weights loaded from cache" if trained.cached else f"trained in {trained.seconds:.1f}s"
    rep.text(
        f"A {len(module.features)}-layer Flax CNN ({n_params} "
        f"parameters) trained with optax on scikit-learn's digits upsampled to {size}x{size}: "
        f"test accuracy {trained.accuracy:.1%} ({how}). "
        f"Each method explains the predicted class of {n_show} test images. "
        f"Run {'with --quick (reduced budgets)' if quick else 'in full'} on {jax.device_count()} "
        f"{jax.devices()[0].platform.upper()} device(s)."
    )

    # ---- figures ------------------------------------------------------------------------
    rep.heading("Attributions")
    fig = viz.plot_attributions(x, maps, labels=labels, cell=1.25)
    viz.save(fig, out / "attributions.png")
    rep.figure(
        "attributions.png",
        "Rows: test images (true -> predicted (probability)). Columns: methods. "
        "Red supports the predicted class, blue speaks against it; magnitudes are shown in "
        "a sequential map. Each heatmap is clipped at its 99.5th percentile.",
    )

    feat = [s.name for s in specs if s.features and s.name in results]
    if feat:
        name = feat[0]
        w = viz.as_array(results[name])[:2]
        fig = viz.plot_segments(x[:2], segments, w, top_k=8, titles=labels[:2])
        viz.save(fig, out / "segments.png")
        rep.figure(
            "segments.png",
            f"{name} on a grid of 2x2-pixel features: the features, their weights, "
            "and the 8 most important ones (green: for the class, red: against).",
        )

    curves_ok = hasattr(jx, "deletion") and hasattr(jx, "insertion") and maps
    if curves_ok:
        rep.heading("Faithfulness: deletion and insertion")
        dele, ins = {}, {}
        for name, m in maps.items():
            try:
                kw = dict(target=ctx.target, steps=16, segments=segments, softmax=True)
                dele[name] = jx.deletion(model, x, jnp.asarray(m), **kw)
                ins[name] = jx.insertion(model, x, jnp.asarray(m), **kw)
            except Exception as e:  # noqa: BLE001
                errors[f"{name} (metrics)"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        rng_map = jnp.asarray(np.random.default_rng(seed + 1).normal(size=x.shape[:3]), jnp.float32)
        try:
            kw = dict(target=ctx.target, steps=16, segments=segments, softmax=True)
            dele["(random)"] = jx.deletion(model, x, rng_map, **kw)
            ins["(random)"] = jx.insertion(model, x, rng_map, **kw)
        except Exception:  # noqa: BLE001
            pass
        if dele:
            fig = viz.plot_curves(
                deletion=dele, insertion=ins, ylabel="probability of the predicted class"
            )
            viz.save(fig, out / "curves.png")
            rep.figure(
                "curves.png",
                "Features (2x2 cells) removed (deletion) or inserted (insertion) "
                "in the order of each method's importance; mean over the images, with a "
                "standard-error band. A random order is the reference.",
            )
            rows = sorted(
                (
                    [n, f"{float(np.mean(dele[n].auc)):.3f}", f"{float(np.mean(ins[n].auc)):.3f}"]
                    for n in dele
                    if n in ins
                ),
                key=lambda r: float(r[1]) - float(r[2]),
            )
            rep.table(
                ["method", "deletion AUC (lower is better)", "insertion AUC (higher is better)"],
                rows,
            )

    rep.heading("Speed")
    rep.text(
        "First call includes tracing and XLA compilation; steady state is the second call with the "
        "same shapes (no recompilation). The physical limit is the time of the method's model "
        "evaluations (forward, or forward+backward for gradient methods) run as one jitted batch "
        "of that many images; the ratio is steady state over that limit."
    )
    rep.table(
        [
            "method",
            "family",
            "first call",
            "steady state",
            "model evals",
            "physical limit",
            "ratio to limit",
        ],
        [
            [
                t.name,
                t.family,
                _fmt_time(t.first_s),
                _fmt_time(t.steady_s),
                str(t.n_evals),
                _fmt_time(t.limit_s),
                _fmt(t.ratio, "x", 2),
            ]
            for t in timings
        ],
    )

    rep.heading("Inside the network")
    params = trained.variables["params"]
    fig = viz.plot_filters(params["conv0"]["kernel"], title="conv0 filters (3x3, red +, blue -)")
    viz.save(fig, out / "filters.png")
    rep.figure("filters.png", "The first layer's 3x3 filters.")
    acts = None
    if hasattr(jx, "layer_activations"):
        try:
            acts = viz.as_array(jx.layer_activations(model, x[:1], layer="conv1"))
        except Exception as e:  # noqa: BLE001
            errors["layer_activations"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    if acts is None:
        _, state = module.apply(
            trained.variables, x[:1], capture_intermediates=True, mutable=["intermediates"]
        )
        acts = np.asarray(state["intermediates"]["conv1"]["__call__"][0])
    fig = viz.plot_feature_maps(
        acts, image=x[0], max_maps=15, title="conv1 feature maps (most active first)"
    )
    viz.save(fig, out / "feature_maps.png")
    rep.figure("feature_maps.png", f"Activations of conv1 on the first image ({labels[0]}).")

    # ---- global view ----------------------------------------------------------------------
    gmethod = next((s for s in specs if s.attr == "integrated_gradients"), None) or next(
        (s for s in specs if s.family == GRADIENT), None
    )
    if gmethod is not None and hasattr(jx, "global_importance"):
        # Batches shaped like the explained images reuse the program compiled above.
        n_glob = (100 if quick else len(ds.x_test)) // n_show * n_show
        xs = ds.x_test[:n_glob].reshape((-1, n_show) + ds.x_test.shape[1:])
        try:
            t0 = time.perf_counter()
            parts, preds = [], []
            for xb in tqdm(xs, desc="global view", disable=quiet, leave=False):
                xb = jnp.asarray(xb)
                tb = jnp.argmax(model(xb), -1).astype(jnp.int32)
                a = viz.as_array(
                    _block(
                        gmethod.call(
                            Context(
                                model, xb, tb, ctx.references, segments, ctx.layer, ctx.key, quick
                            )
                        )
                    )
                )
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
                f"Mean absolute {gmethod.name} over {n_glob} test images, per "
                f"predicted class ({n_glob / gsec:.0f} images/s in batches of {n_show}): "
                "where the model looks for each digit.",
            )
        except Exception as e:  # noqa: BLE001
            errors["global view"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]

    if errors or missing:
        rep.heading("Notes")
        for k, v in errors.items():
            rep.text(f"{k}: skipped ({v})")
        if missing:
            rep.text("Not available in this jaxplain: " + ", ".join(missing))
    rep.text(f"Total demo time {time.perf_counter() - t_start:.1f}s.")
    md, page = rep.write(out)
    say(f"report: {md.resolve()}\n        {page.resolve()}")
    return md
