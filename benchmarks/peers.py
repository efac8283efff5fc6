"""Peer implementations (Captum, shap, lime, Quantus) as zero-argument callables on the PyTorch twin.

Every builder returns `fn()` that computes the attribution for the benchmark
inputs, with all set-up (explainer objects, tensors, masks) done outside the
timed call, the way a user would call the peer in a loop. Imports are local:
a missing peer only disables its own builders (see `available`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np

from .twins import to_nchw


def available(lib: str) -> bool:
    try:
        __import__(lib)
    except Exception:  # noqa: BLE001 - shap/numba can fail at import for many reasons
        return False
    return True


def _t(target: np.ndarray):
    import torch

    return torch.as_tensor(np.asarray(target), dtype=torch.long)


def _feature_mask(segments: np.ndarray, n: int, channels: int = 3):
    """Captum feature mask (N, C, H, W) from an (H, W) or per-example (N, H, W) label map
    (all channels of a pixel together)."""
    import torch

    seg = torch.as_tensor(np.asarray(segments), dtype=torch.long)
    seg = seg[:, None] if seg.ndim == 3 else seg[None, None]
    return seg.expand(n, channels, *seg.shape[-2:]).contiguous()


# ---- gradient family ------------------------------------------------------------------


def captum_path(
    cls_name: str, tm, x: np.ndarray, target, *, steps: int, method: str,
    internal_batch_size=None, layer: str | None = None, **extra,
) -> Callable:
    """Captum's path method `cls_name` from the origin (zero baseline): `IntegratedGradients`,
    or with `layer` a layer or neuron method on that submodule (`LayerIntegratedGradients`,
    `InternalInfluence`, `LayerConductance`, `NeuronConductance`); `extra` goes to
    `attribute` (e.g. `neuron_selector`)."""
    import captum.attr as ca

    cls = getattr(ca, cls_name)
    m = cls(tm) if layer is None else cls(tm, getattr(tm, layer))
    xt, t = to_nchw(x), _t(target)
    return lambda: m.attribute(
        xt,
        baselines=0.0,
        target=t,
        n_steps=steps,
        method=method,
        internal_batch_size=internal_batch_size,
        **extra,
    )


def captum_ig(tm, x: np.ndarray, target, **kw) -> Callable:
    return captum_path("IntegratedGradients", tm, x, target, **kw)


def captum_neuron_conductance(tm, layer: str, x: np.ndarray, target,
                              neuron_chw: tuple[int, int, int], **kw) -> Callable:
    """Captum's `NeuronConductance` of unit `(c, h, w)` of submodule `layer`."""
    return captum_path("NeuronConductance", tm, x, target, layer=layer,
                       neuron_selector=neuron_chw, **kw)


def captum_saliency(tm, x, target) -> Callable:
    from captum.attr import Saliency

    s, xt, t = Saliency(tm), to_nchw(x), _t(target)
    return lambda: s.attribute(xt, target=t, abs=False)


def captum_smoothgrad(tm, x, target, *, n_samples: int, stdev: float, batch=None) -> Callable:
    from captum.attr import NoiseTunnel, Saliency

    nt, xt, t = NoiseTunnel(Saliency(tm)), to_nchw(x), _t(target)
    return lambda: nt.attribute(
        xt,
        nt_type="smoothgrad",
        nt_samples=n_samples,
        stdevs=stdev,
        nt_samples_batch_size=batch,
        target=t,
        abs=False,
    )


def captum_gradient_shap(tm, x, target, refs: np.ndarray, *, n_samples: int) -> Callable:
    from captum.attr import GradientShap

    gs, xt, rt, t = GradientShap(tm), to_nchw(x), to_nchw(refs), _t(target)
    return lambda: gs.attribute(xt, baselines=rt, n_samples=n_samples, stdevs=0.0, target=t)


def shap_gradient(tm, x, refs: np.ndarray, *, n_samples: int, batch_size: int = 50) -> Callable:
    """shap's GradientExplainer on the predicted class (`ranked_outputs=1`)."""
    import shap

    ex, xt = shap.GradientExplainer(tm, to_nchw(refs), batch_size=batch_size), to_nchw(x)
    return lambda: ex.shap_values(xt, nsamples=n_samples, ranked_outputs=1)


def shap_deep(tm, x, refs: np.ndarray, *, ranked: bool) -> Callable:
    """shap's DeepExplainer (DeepLIFT-SHAP) against every reference: the predicted class
    only (`ranked_outputs=1`) or, its default, every output. Returns the values
    `(N, C, H, W, K)` (K = 1 when ranked)."""
    import shap
    import torch

    ex = shap.DeepExplainer(tm, torch.as_tensor(to_nchw(refs)))
    xt = torch.as_tensor(to_nchw(x))
    if ranked:
        return lambda: ex.shap_values(xt, ranked_outputs=1, check_additivity=False)[0]
    return lambda: ex.shap_values(xt, check_additivity=False)


def captum_lrp(tm, x, target, *, gamma: float | None = None, epsilon: float = 1e-9) -> Callable:
    """Captum's `LRP` on a copy of the twin. Its default rules (`EpsilonRule(1e-9)` on
    convolutions, pools and the head) when `gamma` is None; else `GammaRule(gamma)` on
    the convolutions and `EpsilonRule(epsilon)` on the head."""
    import copy

    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import EpsilonRule, GammaRule

    tm = copy.deepcopy(tm)  # LRP sets `rule` attributes on the modules it explains
    if gamma is not None:
        for name, module in tm.named_children():
            if name.startswith("conv"):
                module.rule = GammaRule(gamma=gamma)
        tm.head.rule = EpsilonRule(epsilon=epsilon)
    lrp, xt, t = LRP(tm), to_nchw(x), _t(target)
    return lambda: lrp.attribute(xt, target=t)


def captum_guided_backprop(tm, x, target) -> Callable:
    from captum.attr import GuidedBackprop

    gb, xt, t = GuidedBackprop(tm), to_nchw(x), _t(target)
    return lambda: gb.attribute(xt, target=t)


def captum_deeplift(tm, x, target, baseline: float) -> Callable:
    from captum.attr import DeepLift

    dl, xt, t = DeepLift(tm), to_nchw(x), _t(target)
    return lambda: dl.attribute(xt, baselines=baseline, target=t)


def captum_layer_deeplift(tm, layer: str, x, target, baseline: float) -> Callable:
    from captum.attr import LayerDeepLift

    dl, t = LayerDeepLift(tm, getattr(tm, layer)), _t(target)
    xt = to_nchw(x).requires_grad_()  # its hooks need a graph even below the layer
    return lambda: dl.attribute(xt, baselines=baseline, target=t)


def captum_deeplift_shap(tm, x, target, refs: np.ndarray) -> Callable:
    import torch
    from captum.attr import DeepLiftShap

    dl, xt, t = DeepLiftShap(tm), to_nchw(x), _t(target)
    rt = torch.as_tensor(to_nchw(refs))
    return lambda: dl.attribute(xt, baselines=rt, target=t)


def captum_layer_gradcam(tm, layer: str, x, target) -> Callable:
    from captum.attr import LayerGradCam

    gc, xt, t = LayerGradCam(tm, getattr(tm, layer)), to_nchw(x), _t(target)
    return lambda: gc.attribute(xt, target=t, relu_attributions=True)


def captum_guided_gradcam(tm, layer: str, x, target) -> Callable:
    from captum.attr import GuidedGradCam

    gc, xt, t = GuidedGradCam(tm, getattr(tm, layer)), to_nchw(x), _t(target)
    return lambda: gc.attribute(xt, target=t)


# ---- perturbation family --------------------------------------------------------------


def captum_lime(tm, x, target, segments, *, n_samples: int, ppe: int | None) -> Callable:
    """Captum `Lime` with its default surrogate (sklearn Lasso) and kernel; `ppe=None` = default 1."""
    from captum.attr import Lime

    lime, xt, t = Lime(tm), to_nchw(x), _t(target)
    mask = _feature_mask(segments, len(x), x.shape[-1])
    kw = {} if ppe is None else {"perturbations_per_eval": ppe}
    return lambda: lime.attribute(
        xt, baselines=0.0, target=t, feature_mask=mask, n_samples=n_samples, **kw
    )


def captum_kernel_shap(tm, x, target, segments, *, n_samples: int, ppe: int | None) -> Callable:
    from captum.attr import KernelShap

    ks, xt, t = KernelShap(tm), to_nchw(x), _t(target)
    mask = _feature_mask(segments, len(x), x.shape[-1])
    kw = {} if ppe is None else {"perturbations_per_eval": ppe}
    return lambda: ks.attribute(
        xt, baselines=0.0, target=t, feature_mask=mask, n_samples=n_samples, **kw
    )


def captum_shapley_sampling(
    tm, x, target, segments, *, n_permutations: int, ppe: int | None
) -> Callable:
    from captum.attr import ShapleyValueSampling

    sv, xt, t = ShapleyValueSampling(tm), to_nchw(x), _t(target)
    mask = _feature_mask(segments, len(x), x.shape[-1])
    kw = {} if ppe is None else {"perturbations_per_eval": ppe}
    return lambda: sv.attribute(
        xt, baselines=0.0, target=t, feature_mask=mask, n_samples=n_permutations, **kw
    )


def captum_feature_ablation(tm, x, target, segments, *, ppe: int | None) -> Callable:
    from captum.attr import FeatureAblation

    fa, xt, t = FeatureAblation(tm), to_nchw(x), _t(target)
    mask = _feature_mask(segments, len(x), x.shape[-1])
    kw = {} if ppe is None else {"perturbations_per_eval": ppe}
    return lambda: fa.attribute(xt, baselines=0.0, target=t, feature_mask=mask, **kw)


def captum_occlusion(tm, x, target, *, window: int, stride: int, ppe: int | None) -> Callable:
    from captum.attr import Occlusion

    oc, xt, t = Occlusion(tm), to_nchw(x), _t(target)
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
                out[s : s + chunk] = tm(to_nchw(imgs))[:, int(target)].numpy()
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
            return tm(to_nchw(np.asarray(images, np.float32))).numpy()

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


def to_features(values: Any, segments: np.ndarray) -> np.ndarray:
    """Per-pixel Captum output (N, C, H, W) -> one value per feature (N, d) (first pixel of each)."""
    a = values.detach().numpy() if hasattr(values, "detach") else np.asarray(values)
    seg = np.asarray(segments)
    d = int(seg.max()) + 1
    flat = seg.reshape(-1)
    first = np.array([np.flatnonzero(flat == j)[0] for j in range(d)])
    return a[:, 0].reshape(a.shape[0], -1)[:, first]


# ---- metrics (Quantus) ----------------------------------------------------------------


def distinct_ranks(pixel_map: np.ndarray) -> np.ndarray:
    """Attributions `(N, H, W)` -> tie-free values with the same order (stable: ties by pixel index).

    Quantus sorts with NumPy's default (unstable) `argsort`, so among equal
    attributions the removal order is arbitrary, while jaxplain breaks ties by
    pixel index. Comparing both on distinct values (`d - position`, exact in
    float32) removes the ambiguity without changing jaxplain's order.
    """
    pm = np.asarray(pixel_map, np.float64)
    n, d = pm.shape[0], int(np.prod(pm.shape[1:]))
    order = np.argsort(-pm.reshape(n, d), axis=1, kind="stable")
    pos = np.empty_like(order)
    pos[np.arange(n)[:, None], order] = np.arange(d)
    return (d - pos).astype(np.float32).reshape(pm.shape)


def quantus_pixel_flipping(
    tm, x: np.ndarray, target, pixel_attr: np.ndarray, *, pixels_per_step: int
) -> Callable:
    """Quantus `PixelFlipping` (Bach et al.'s deletion curve) on the twin, logits, zero baseline.

    Quantus broadcasts a `(N, 1, H, W)` map over the channels and flattens it to
    `C * H * W` features, each pixel appearing C times with the same value;
    `features_in_step = pixels_per_step * C` therefore removes whole pixels per
    step when the values of different pixels are distinct (see `distinct_ranks`).
    `perturb_baseline=0.0`, not "black": in Quantus 0.6 "black" is each image's
    minimum, not 0. No normalisation, no abs, no warnings, no plots, no progress
    bar; it evaluates after every step (`H * W / pixels_per_step` forwards per
    image), not the unperturbed image.
    """
    import quantus

    class PixelFlipping(quantus.PixelFlipping):
        # Quantus 0.6.0 asserts that `features_in_step` divides H * W, but then
        # steps over the C * H * W flattened features: for RGB no step of whole
        # pixels passes (48 does not divide 1024). Only that check is skipped;
        # the timed computation is Quantus' own.
        def custom_preprocess(self, x_batch, **kwargs):
            return None

    c = x.shape[-1]
    metric = PixelFlipping(
        features_in_step=pixels_per_step * c,
        perturb_baseline=0.0,
        abs=False,
        normalise=False,
        return_aggregate=False,
        disable_warnings=True,
        display_progressbar=False,
    )
    xb = to_nchw(x).numpy()
    ab = np.ascontiguousarray(np.asarray(pixel_attr, np.float32)[:, None])
    yb = np.asarray(target).astype(np.int64)
    return lambda: metric(
        model=tm,
        x_batch=xb,
        y_batch=yb,
        a_batch=ab,
        channel_first=True,
        softmax=False,
        device="cpu",
        batch_size=max(64, len(xb)),
    )
