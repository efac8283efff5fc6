"""`jaxplain demo`: train a small Flax CNN on digits, explain it, check, write a report.

The demo runs every method of the registry that has demo settings (`registry.method(...,
demo=...)`) and that the installed jaxplain offers, and keeps working when one fails:
that method is skipped with a note in the report.

Steps: load scikit-learn's digits (upsampled to 16x16), train the CNN with optax or
load its cached weights, explain a few test images with every method, time each
method (first call with compilation, then steady state) against the physical
limit of the model evaluations it needs, check every method (deletion against a
random order, attribution mass on the ink; `demo_checks`), explain the zoo's vision
transformer with the attention methods (`demo_attention`), and write figures plus
`report.md` and `index.html` (`demo_report`).

Grad-CAM explains `conv1`, the last convolution at the input's resolution (before
pooling). On this flatten-head CNN the last layer `conv2` (8x8, after pooling) gives
maps no better than random on deletion, with much of their mass on the border ring;
`conv1` beats a random order by a wide margin and puts most of its mass on the ink.
Global-average-pooling heads of the same size were tried and are worse: their evidence
includes where the ink is *not*, which deletion cannot remove.
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
from . import demo_attention
from . import demo_concepts
from . import demo_report as R
from . import zoo
from .demo_checks import run_checks
from .demo_methods import (
    CAM,
    GRADIENT,
    PERTURBATION,
    Context,
    LimitTimer,
    MethodSpec,
    Timing,
    available,
    method_specs,
    pixel_maps,
    run_methods,
)
from .report import Report

__all__ = [
    "CAM",
    "GRADIENT",
    "PERTURBATION",
    "CAM_LAYER",
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

SIZE = 16
"""Side of the digits (scikit-learn's 8x8 upsampled)."""
CAM_LAYER = "conv1"
"""The layer Grad-CAM explains (see the module docstring)."""


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
    ds, trained = _train(out, cache, quick, quiet, seed, say)
    ctx, labels = _context(ds, trained, quick, seed)
    all_specs = method_specs(quick)
    specs = available(all_specs, quick)
    missing = [s.attr for s in all_specs if not hasattr(jx, s.attr)]
    results, timings, errors = run_methods(specs, ctx, LimitTimer(ctx.model, ctx.x, ctx.target),
                                           progress=not quiet)
    say(f"explained {len(ctx.x)} images with {len(results)} methods"
        + (f" ({len(errors)} failed: {', '.join(errors)})" if errors else ""))
    maps = pixel_maps(results, specs, ctx.segments, (SIZE, SIZE))
    checks = run_checks(ctx.model, ctx.x, maps, ctx.target, ctx.segments, seed=seed + 1)
    errors.update(checks.errors)
    for name, fails in checks.failed().items():
        say(f"CHECK FAILED: {name}: {'; '.join(fails)}")

    rep = Report("jaxplain demo: explaining a CNN on digits")
    R.intro(rep, trained, ctx, quick, checks)
    R.attributions(rep, out, ctx, results, specs, maps, labels)
    R.faithfulness(rep, out, checks)
    R.speed(rep, timings)
    R.inside(rep, out, trained, ctx, labels, errors)
    R.global_view(rep, out, ds, ctx, specs, quiet, errors)
    try:
        demo_attention.section(rep, out, quick=quick, cache=cache, seed=seed, say=say)
    except Exception as e:  # noqa: BLE001 - the demo notes a failed section and goes on
        errors["attention (ViT)"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    demo_concepts.section(rep, out, ds, ctx.model, quick, seed, errors)
    R.notes(rep, errors, missing)
    rep.text(f"Total demo time {time.perf_counter() - t_start:.1f}s.")
    md, page = rep.write(out)
    say(f"report: {md.resolve()}\n        {page.resolve()}")
    return md


def _train(out: Path, cache: Path, quick: bool, quiet: bool, seed: int, say):
    """The digits and the trained CNN (from the weights cache when present)."""
    from tqdm.auto import tqdm

    ds = D.load_digits(size=SIZE)
    module = zoo.SmallCNN((16, 32, 32), n_classes=10)
    epochs = 4 if quick else 10
    say(f"jaxplain demo: digits {ds.x_train.shape[1]}x{ds.x_train.shape[2]}, "
        f"{len(ds.x_train)} train / {len(ds.x_test)} test images")
    bar = tqdm(total=epochs, desc="training", disable=quiet, leave=False)
    trained = zoo.train_classifier(
        module, ds.x_train, ds.y_train, ds.x_test, ds.y_test, epochs=epochs, lr=1e-2, seed=seed,
        cache=cache,
        progress=lambda e, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")),
    )
    bar.close()
    zoo.save(out / "model.ckpt", module, trained.variables, ds.x_train.shape[1:],
             {"accuracy": trained.accuracy, "classes": list(ds.classes)})
    say(("loaded cached" if trained.cached else "trained")
        + f" CNN in {trained.seconds:.1f}s: test accuracy {trained.accuracy:.1%}")
    return ds, trained


def _context(ds, trained, quick: bool, seed: int) -> tuple[Context, list[str]]:
    """The explained test images, their predicted classes and labels, and the settings."""
    model = trained.model
    n_show = 4 if quick else 8
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds.x_test), n_show, replace=False))
    x = jnp.asarray(ds.x_test[idx])
    probs = np.asarray(jax.nn.softmax(model(x)))
    pred = probs.argmax(-1).astype(np.int32)
    labels = [f"{ds.y_test[i]} -> {p} ({probs[j, p]:.2f})" for j, (i, p) in enumerate(zip(idx, pred))]
    ctx = Context(model, x, jnp.asarray(pred),
                  ds.x_train[rng.choice(len(ds.x_train), 64, replace=False)],
                  jx.grid_segments(SIZE, SIZE, 8), CAM_LAYER, jax.random.key(seed), quick)
    return ctx, labels
