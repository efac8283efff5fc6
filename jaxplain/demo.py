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

import html
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx

from . import data as D
from . import zoo

GRADIENT, CAM, PERTURBATION = "gradients", "CNN internals", "perturbation / Shapley"


@dataclass
class Context:
    """What the method calls need: the model, the images, their targets and settings."""

    model: Any
    x: jax.Array
    target: jax.Array
    references: np.ndarray
    segments: np.ndarray
    layer: str
    key: jax.Array
    quick: bool


@dataclass
class MethodSpec:
    name: str
    attr: str
    family: str
    backward: bool  # each model evaluation is a forward+backward pass
    call: Callable[[Context], Any]
    features: bool = False  # returns one value per segment
    quick: bool = True  # part of the --quick selection (one or two per family)


def method_specs(quick: bool) -> list[MethodSpec]:
    """Every method the demo knows, with settings sized for `quick` or full runs."""
    q = quick
    k = lambda c, i: jax.random.fold_in(c.key, i)  # noqa: E731
    return [
        MethodSpec(
            "saliency",
            "saliency",
            GRADIENT,
            True,
            lambda c: jx.saliency(c.model, c.x, target=c.target),
        ),
        MethodSpec(
            "gradient x input",
            "gradient_x_input",
            GRADIENT,
            True,
            lambda c: jx.gradient_x_input(c.model, c.x, target=c.target),
            quick=False,
        ),
        MethodSpec(
            "integrated gradients",
            "integrated_gradients",
            GRADIENT,
            True,
            lambda c: jx.integrated_gradients(c.model, c.x, target=c.target, steps=16 if q else 64),
        ),
        MethodSpec(
            "smoothgrad",
            "smoothgrad",
            GRADIENT,
            True,
            lambda c: jx.smoothgrad(
                c.model, c.x, target=c.target, key=k(c, 1), n_samples=16 if q else 50
            ),
        ),
        MethodSpec(
            "expected gradients",
            "expected_gradients",
            GRADIENT,
            True,
            lambda c: jx.expected_gradients(
                c.model,
                c.x,
                target=c.target,
                references=c.references,
                key=k(c, 2),
                n_samples=32 if q else 128,
            ),
            quick=False,
        ),
        MethodSpec(
            "guided backprop",
            "guided_backprop",
            GRADIENT,
            True,
            lambda c: jx.guided_backprop(c.model, c.x, target=c.target),
        ),
        MethodSpec(
            "Grad-CAM",
            "grad_cam",
            CAM,
            True,
            lambda c: jx.grad_cam(c.model, c.x, target=c.target, layer=c.layer),
        ),
        MethodSpec(
            "Grad-CAM++",
            "grad_cam_plus_plus",
            CAM,
            True,
            lambda c: jx.grad_cam_plus_plus(c.model, c.x, target=c.target, layer=c.layer),
            quick=False,
        ),
        MethodSpec(
            "occlusion",
            "occlusion",
            PERTURBATION,
            False,
            lambda c: jx.occlusion(c.model, c.x, target=c.target, window=4, strides=2),
        ),
        MethodSpec(
            "RISE",
            "rise",
            PERTURBATION,
            False,
            lambda c: jx.rise(
                c.model, c.x, target=c.target, key=k(c, 3), n_masks=500 if q else 2000, cells=4
            ),
            quick=False,
        ),
        MethodSpec(
            "LIME",
            "lime",
            PERTURBATION,
            False,
            lambda c: jx.lime(
                c.model,
                c.x,
                target=c.target,
                segments=c.segments,
                key=k(c, 4),
                n_samples=300 if q else 1000,
            ),
            features=True,
        ),
        MethodSpec(
            "KernelSHAP",
            "kernel_shap",
            PERTURBATION,
            False,
            lambda c: jx.kernel_shap(
                c.model,
                c.x,
                target=c.target,
                segments=c.segments,
                key=k(c, 5),
                n_samples=256 if q else 1000,
            ),
            features=True,
        ),
        MethodSpec(
            "Shapley sampling",
            "shapley_sampling",
            PERTURBATION,
            False,
            lambda c: jx.shapley_sampling(
                c.model,
                c.x,
                target=c.target,
                segments=c.segments,
                key=k(c, 6),
                n_permutations=4 if q else 16,
            ),
            features=True,
            quick=False,
        ),
    ]


def available(specs: list[MethodSpec], quick: bool = False) -> list[MethodSpec]:
    """The specs whose function exists in this jaxplain (only the quick selection with `quick`)."""
    return [s for s in specs if hasattr(jx, s.attr) and (s.quick or not quick)]


def _block(tree):
    return jax.tree.map(
        lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, tree
    )


class LimitTimer:
    """The physical limit: seconds for `n` model evaluations run as one jitted batch.

    `limit(n, backward)` times one forward (or forward+backward) pass of the model
    on a batch of `n` copies of the explained images (the best of a few runs, after
    compiling), once per distinct `n`. Batches above `max_batch` are extrapolated
    linearly from `max_batch`.
    """

    def __init__(
        self, model, x: jax.Array, target: jax.Array, repeats: int = 3, max_batch: int = 4096
    ):
        self.model, self.x, self.target = model, x, target
        self.repeats, self.max_batch = repeats, max_batch
        self._fwd = jax.jit(lambda m, z: m(z))
        self._fb = jax.jit(
            jax.grad(lambda z, m, t: jnp.sum(jnp.take_along_axis(m(z), t[:, None], 1)))
        )
        self._cache: dict[tuple[int, bool], float] = {}

    def limit(self, n: int, backward: bool) -> float:
        if n > self.max_batch:
            return self.limit(self.max_batch, backward) * n / self.max_batch
        if (n, backward) not in self._cache:
            xb = jnp.resize(self.x, (n,) + self.x.shape[1:])
            tb = jnp.resize(self.target, (n,))
            f, args = (
                (self._fb, (xb, self.model, tb)) if backward else (self._fwd, (self.model, xb))
            )
            _block(f(*args))
            best = float("inf")
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                _block(f(*args))
                best = min(best, time.perf_counter() - t0)
            self._cache[(n, backward)] = best
        return self._cache[(n, backward)]


@dataclass
class Timing:
    name: str
    family: str
    first_s: float
    steady_s: float
    n_evals: int
    limit_s: float | None

    @property
    def ratio(self) -> float | None:
        return self.steady_s / self.limit_s if self.limit_s else None


def run_methods(
    specs: list[MethodSpec], ctx: Context, limits: LimitTimer | None, progress: bool = True
) -> tuple[dict[str, Any], list[Timing], dict[str, str]]:
    """Runs every spec twice (compile, then steady state); returns results, timings and errors."""
    from tqdm.auto import tqdm

    results, timings, errors = {}, [], {}
    for spec in tqdm(specs, desc="explaining", disable=not progress, leave=False):
        try:
            t0 = time.perf_counter()
            r = _block(spec.call(ctx))
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            r = _block(spec.call(ctx))
            steady = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - the demo reports and skips a failing method
            errors[spec.name] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            continue
        n_evals = getattr(r, "n_evals", None)
        n = int(np.sum(np.asarray(n_evals))) if n_evals is not None else 0
        limit = limits.limit(n, spec.backward) if (limits is not None and n) else None
        results[spec.name] = r
        timings.append(Timing(spec.name, spec.family, first, steady, n, limit))
    return results, timings, errors


def pixel_maps(
    results: dict[str, Any], specs: list[MethodSpec], segments: np.ndarray, hw
) -> dict[str, np.ndarray]:
    """Every result as an `(N, H, W)` map (channels summed, features painted on their pixels)."""
    from . import visualize as viz

    by_name = {s.name: s for s in specs}
    maps = {}
    for name, r in results.items():
        v = viz.as_array(r)
        if by_name[name].features or v.ndim == 2:
            v = viz.feature_map(v, segments)
        elif v.ndim == 4:
            v = v.sum(-1)
        maps[name] = viz.upsample(v, hw)
    return maps


@dataclass
class Report:
    """Markdown and HTML written side by side from the same blocks."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def text(self, s: str):
        self.blocks.append(("p", s))

    def heading(self, s: str):
        self.blocks.append(("h", s))

    def figure(self, path: str, caption: str):
        self.blocks.append(("img", (path, caption)))

    def table(self, header: list[str], rows: list[list[str]]):
        self.blocks.append(("table", (header, rows)))

    def write(self, out: Path) -> tuple[Path, Path]:
        md = [f"# {self.title}", ""]
        ht = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title><style>body{{font-family:sans-serif;max-width:1100px;"
            "margin:2em auto;padding:0 1em}img{max-width:100%}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for kind, b in self.blocks:
            if kind == "p":
                md += [b, ""]
                ht.append(f"<p>{html.escape(b)}</p>")
            elif kind == "h":
                md += [f"## {b}", ""]
                ht.append(f"<h2>{html.escape(b)}</h2>")
            elif kind == "img":
                md += [f"![{b[1]}]({b[0]})", "", f"*{b[1]}*", ""]
                ht.append(
                    f"<figure><img src='{html.escape(b[0])}' alt='{html.escape(b[1])}'>"
                    f"<figcaption>{html.escape(b[1])}</figcaption></figure>"
                )
            else:
                header, rows = b
                md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                md += ["| " + " | ".join(r) + " |" for r in rows] + [""]
                ht.append(
                    "<table><tr>"
                    + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                    + "</tr>"
                    + "".join(
                        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                        for r in rows
                    )
                    + "</table>"
                )
        ht.append("</body></html>")
        (out / "report.md").write_text("\n".join(md))
        (out / "index.html").write_text("\n".join(ht))
        return out / "report.md", out / "index.html"

    def figures(self) -> list[str]:
        return [b[0] for k, b in self.blocks if k == "img"]


def _fmt(v: float | None, unit: str = "", digits: int = 3) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:.{digits}g}{unit}"


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
    from . import visualize as viz

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
                _fmt(t.first_s, " s"),
                _fmt(t.steady_s * 1e3, " ms"),
                str(t.n_evals),
                _fmt(t.limit_s * 1e3 if t.limit_s else None, " ms"),
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
