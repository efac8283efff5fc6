"""Captum's perturbation methods, shap's KernelExplainer and lime's LimeImageExplainer
as zero-argument callables on the PyTorch twin (set-up outside the timed call)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np

from .common import feature_mask, targets, to_nchw


def captum_lime(tm, x, target, segments, *, n_samples: int, ppe: int | None) -> Callable:
    """Captum `Lime` with its default surrogate (sklearn Lasso) and kernel; `ppe=None` = default 1."""
    from captum.attr import Lime

    lime, xt, t = Lime(tm), to_nchw(x), targets(target)
    mask = feature_mask(segments, len(x), x.shape[-1])
    kw = {} if ppe is None else {"perturbations_per_eval": ppe}
    return lambda: lime.attribute(
        xt, baselines=0.0, target=t, feature_mask=mask, n_samples=n_samples, **kw
    )


def captum_kernel_shap(tm, x, target, segments, *, n_samples: int, ppe: int | None) -> Callable:
    from captum.attr import KernelShap

    ks, xt, t = KernelShap(tm), to_nchw(x), targets(target)
    mask = feature_mask(segments, len(x), x.shape[-1])
    kw = {} if ppe is None else {"perturbations_per_eval": ppe}
    return lambda: ks.attribute(
        xt, baselines=0.0, target=t, feature_mask=mask, n_samples=n_samples, **kw
    )


def captum_shapley_sampling(
    tm, x, target, segments, *, n_permutations: int, ppe: int | None
) -> Callable:
    from captum.attr import ShapleyValueSampling

    sv, xt, t = ShapleyValueSampling(tm), to_nchw(x), targets(target)
    mask = feature_mask(segments, len(x), x.shape[-1])
    kw = {} if ppe is None else {"perturbations_per_eval": ppe}
    return lambda: sv.attribute(
        xt, baselines=0.0, target=t, feature_mask=mask, n_samples=n_permutations, **kw
    )


def captum_feature_ablation(tm, x, target, segments, *, ppe: int | None) -> Callable:
    from captum.attr import FeatureAblation

    fa, xt, t = FeatureAblation(tm), to_nchw(x), targets(target)
    mask = feature_mask(segments, len(x), x.shape[-1])
    kw = {} if ppe is None else {"perturbations_per_eval": ppe}
    return lambda: fa.attribute(xt, baselines=0.0, target=t, feature_mask=mask, **kw)


def captum_occlusion(tm, x, target, *, window: int, stride: int, ppe: int | None) -> Callable:
    from captum.attr import Occlusion

    oc, xt, t = Occlusion(tm), to_nchw(x), targets(target)
    c = x.shape[-1]
    kw = {} if ppe is None else {"perturbations_per_eval": ppe}
    return lambda: oc.attribute(
        xt,
        sliding_window_shapes=(c, window, window),
        strides=(c, stride, stride),
        baselines=0.0,
        target=t,
        **kw,
    )


def coalition_fn(
    tm, x: np.ndarray, target: int, segments: np.ndarray, chunk: int = 1000
) -> Callable:
    """`f(z) -> (m,)`: the twin's target logit on `x` with features where `z == 0` set to 0.

    What a shap `KernelExplainer` user writes for an image model: masks -> images on
    the host -> the model in chunks.
    """
    import torch

    img = np.asarray(x[0], np.float32)
    seg = np.asarray(segments)

    def f(z):
        z = np.asarray(z)
        out = np.empty(len(z), np.float32)
        for s in range(0, len(z), chunk):
            keep = z[s : s + chunk][:, seg] > 0.5  # (m, H, W)
            imgs = np.where(keep[..., None], img, 0.0).astype(np.float32)
            with torch.no_grad():
                out[s : s + chunk] = tm(to_nchw(imgs))[:, int(target)].cpu().numpy()
        return out

    return f


def shap_kernel(
    tm, x, target, segments, *, n_samples: int, seed: int | None = 0, l1_reg: Any = "auto"
) -> Callable:
    """shap `KernelExplainer` on the feature coalitions (background: all features off).

    `l1_reg="auto"` (shap's default) selects features with an AIC Lasso when few
    coalitions are sampled; `l1_reg=False` keeps all features (more accurate).
    """
    import shap

    d = int(np.max(segments)) + 1
    ex = shap.KernelExplainer(
        coalition_fn(tm, x, int(np.asarray(target).reshape(-1)[0]), segments), np.zeros((1, d))
    )
    ones = np.ones((1, d))

    def run():
        if seed is not None:
            np.random.seed(seed)
        return ex.shap_values(ones, nsamples=n_samples, silent=True, l1_reg=l1_reg)

    return run


def lime_image(
    tm, x, target, segments, *, n_samples: int, batch_size: int = 10, seed: int = 0
) -> Callable:
    """The `lime` package's `LimeImageExplainer` with our segmentation and a zero baseline."""
    import torch
    from lime import lime_image as li

    explainer = li.LimeImageExplainer(random_state=seed)
    img = np.asarray(x[0], np.float64)
    seg = np.asarray(segments)
    label = int(np.asarray(target).reshape(-1)[0])

    def classifier(images):
        with torch.no_grad():
            return tm(to_nchw(np.asarray(images, np.float32))).cpu().numpy()

    def run():
        with contextlib.redirect_stderr(io.StringIO()):  # lime always draws a tqdm bar
            return explainer.explain_instance(
                img,
                classifier,
                labels=(label,),
                top_labels=None,
                hide_color=0,
                num_samples=n_samples,
                batch_size=batch_size,
                segmentation_fn=lambda _: seg,
                random_seed=seed,
            )

    return run
