"""The demo's concept section: TCAV for one digit class against concepts from shipped data."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

import jaxplain as jx

from . import concepts as C
from .report import Report

LAYER = "conv1"
CLASS = 7
QUICK_CONCEPTS = ("thick strokes", "thin strokes", "vertical bars", "brick")


def tcav_table(model, ds, *, quick: bool, seed: int = 0) -> tuple[dict, dict, float]:
    """TCAV of class `CLASS` at `LAYER` for every concept, under the two-sample t-test
    (`"student"`) and against random concepts: `(student, random_concepts, seconds)`."""
    sets = C.digit_concepts(ds.x_train, n=30 if quick else 40, seed=seed)
    if quick:
        sets = {k: v for k, v in sets.items() if k in QUICK_CONCEPTS}
    rng = np.random.default_rng(seed + 1)
    pool = ds.x_train[rng.choice(len(ds.x_train), 200, replace=False)]
    x = ds.x_test[ds.y_test == CLASS][:30]
    t0 = time.perf_counter()
    runs = {}
    for test in ("student", "random_concepts"):
        runs[test] = {name: jx.tcav(model, x, target=CLASS, layer=LAYER, concept_x=cx,
                                    random_x=pool, key=jax.random.key(seed), test=test,
                                    n_random=10 if quick else 20)
                      for name, cx in sets.items()}
    jax.block_until_ready(runs)
    return runs["student"], runs["random_concepts"], time.perf_counter() - t0


def section(rep: Report, out: Path, ds, model, quick: bool, seed: int, errors: dict) -> None:
    """Adds "Concepts (TCAV)": the plot of the Student runs and a table of both tests."""
    from .. import visualize as viz

    try:
        student, against_random, seconds = tcav_table(model, ds, quick=quick, seed=seed)
    except Exception as e:  # noqa: BLE001 - the rest of the report stands
        errors["TCAV"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        return
    rep.heading("Concepts (TCAV)")
    fig = viz.plot_tcav(student, title=f"class {CLASS}: TCAV at {LAYER}")
    viz.save(fig, out / "tcav.png")
    n_random = len(np.asarray(next(iter(student.values())).scores))
    rep.figure(
        "tcav.png",
        f"How often moving {LAYER}'s activations towards a concept raises the class-{CLASS} "
        f"logit, for {CLASS}s of the test set (TCAV score; {n_random} CAVs per concept, each "
        "against its own random set of digits), next to the same for random sets of digits. "
        "Stars: p < 0.05 in the two-sample t-test of Kim et al. and Captum's tutorial.",
    )
    rows = [[name, f"{float(r.score):.2f}", f"{float(np.mean(r.random_scores)):.2f}",
             f"{float(np.mean(r.accuracy)):.2f}", f"{float(r.p_value):.2g}",
             f"{float(against_random[name].p_value):.2g}"] for name, r in student.items()]
    rep.table(["concept", "TCAV score", "random", "CAV accuracy", "p (t-test)",
               "p (vs random concepts)"], rows)
    starred = [n for n, r in student.items() if float(r.p_value) < 0.05]
    kept = [n for n, r in against_random.items() if float(r.p_value) < 0.05]
    rep.text(
        f"Concept sets ({', '.join(student)}) come from shipped data: digits with thicker or "
        "thinner strokes (grey dilation, erosion), synthetic bars, crops of scikit-image's "
        "texture photographs. The t-test takes the runs of a concept as independent, but "
        "they share the one concept set, as the random runs share one random counterpart: "
        "it calls sets of random images significant far more often than 5% of the time "
        "(tests/test_concepts.py). The last column tests the concept's mean score against "
        "the scores of fresh random sets of digits, as one more draw: a conservative test. "
        f"Significant (p < 0.05) under the t-test: {', '.join(starred) or 'none'}; against "
        f"random concepts: {', '.join(kept) or 'none'}. {2 * len(student)} TCAV runs in "
        f"{seconds:.1f}s."
    )
