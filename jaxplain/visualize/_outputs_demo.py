"""One call that explains a classifier through its outputs, for reports and the demo."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from .._core.types import to_numpy
from ..gradients.basic import saliency
from ..outputs.anchors import anchors
from ..outputs.counterfactual import counterfactual
from ..outputs.ensemble import over_weights
from ..outputs.plane import decision_plane
from ._outputs import plot_anchor, plot_counterfactual, plot_decision_plane, plot_ensemble


def output_views(model: Any, x: Any, *, segments: Any, key: Any,
                 bounds: tuple[float, float] | None = (0.0, 1.0),
                 class_names: Sequence[str] | None = None,
                 ensemble: tuple[Any, Any] | None = None,
                 resolution: int = 96, anchor_examples: int = 4) -> dict[str, tuple[Any, str]]:
    """Counterfactuals, a decision plane, anchors (and an ensemble view) of `model` on `x`.

    Args:
      model: a classifier (`Model`, NNX module or callable) on images `x (N, H, W, C)`.
      x: a few images.
      segments: superpixels or grid cells `(H, W)` or `(N, H, W)` for the anchors.
      key: a `jax.random.key`.
      bounds: the valid pixel range for the counterfactuals.
      class_names: labels of the classes.
      ensemble: optionally `(model_fn, stacked_params)` of an ensemble: adds the
        mean/std of the members' saliency maps (`over_weights`).
      resolution: grid points per axis of the decision plane (of the first image).
      anchor_examples: anchors for this many images.

    Returns:
      `{name: (Figure, caption)}` with names `"counterfactuals"`, `"decision_plane"`,
      `"anchors"` and, with `ensemble`, `"ensemble"`. Captions give the numbers
      (distances, evaluations, precision) in one sentence each.
    """
    k_anchor = jax.random.fold_in(key, 1)
    cf = counterfactual(model, x, target_class="other", bounds=bounds)
    cfn = to_numpy(cf)
    xs = np.asarray(x)
    u = cfn.x[:1] - xs[:1]
    g = np.asarray(saliency(model, xs[:1], target=int(cfn.original_class[0])).values)
    plane = decision_plane(model, xs[:1], directions=np.concatenate([u, g]),
                           limits=((-0.5, 2.0), (-1.25, 1.25)), resolution=resolution)
    views = {
        "counterfactuals": (plot_counterfactual(xs, cfn, class_names=class_names), (
            f"Smallest L2 change (DeepFool steps, pixels kept in {bounds}) that changes the "
            f"predicted class: {int(cfn.success.sum())}/{len(xs)} found, median distance "
            f"{np.median(cfn.distance):.3g}, {int(np.mean(cfn.n_evals))} model evaluations "
            f"per image.")),
        "decision_plane": (plot_decision_plane(to_numpy(plane), marks={"counterfactual": cfn.x[:1]},
                                               class_names=class_names), (
            f"The model on the plane through the first image spanned by the step to its "
            f"counterfactual (alpha = 1) and its saliency map: {resolution ** 2} points in one "
            f"jitted program.")),
    }
    m = min(anchor_examples, len(xs))
    seg = np.asarray(segments)
    a = to_numpy(anchors(model, xs[:m], segments=seg[:m] if seg.ndim == 3 else seg, key=k_anchor))
    views["anchors"] = (plot_anchor(xs[:m], seg, a, class_names=class_names), (
        f"Anchors: the segments that, kept, hold the prediction with precision >= 0.95 "
        f"while the others are replaced at random (mean colour); {int(a.valid.sum())}/{m} met, "
        f"{int(np.mean(a.n_evals))} model evaluations per image."))
    if ensemble is not None:
        model_fn, stacked = ensemble
        r = to_numpy(over_weights(saliency, model_fn, stacked, xs, target="predicted"))
        views["ensemble"] = (plot_ensemble(xs, r, class_names=class_names), (
            f"Saliency of {r.values.shape[0]} ensemble members in one vmapped program: mean, "
            f"spread, and each member's map."))
    return views
