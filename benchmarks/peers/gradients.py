"""Captum's and shap's gradient methods as zero-argument callables on the PyTorch twin.

Every builder returns `fn()` computing the attribution for the benchmark inputs,
with all set-up (explainer objects, tensors) done outside the timed call, the
way a user would call the peer in a loop. Imports are local: a missing peer only
disables its own builders (`available`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .common import targets, to_nchw


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
    xt, t = to_nchw(x), targets(target)
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

    s, xt, t = Saliency(tm), to_nchw(x), targets(target)
    return lambda: s.attribute(xt, target=t, abs=False)


def captum_smoothgrad(tm, x, target, *, n_samples: int, stdev: float, batch=None) -> Callable:
    from captum.attr import NoiseTunnel, Saliency

    nt, xt, t = NoiseTunnel(Saliency(tm)), to_nchw(x), targets(target)
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

    gs, xt, rt, t = GradientShap(tm), to_nchw(x), to_nchw(refs), targets(target)
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

    ex, xt = shap.DeepExplainer(tm, to_nchw(refs)), to_nchw(x)
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
    lrp, xt, t = LRP(tm), to_nchw(x), targets(target)
    return lambda: lrp.attribute(xt, target=t)


def captum_guided_backprop(tm, x, target) -> Callable:
    from captum.attr import GuidedBackprop

    gb, xt, t = GuidedBackprop(tm), to_nchw(x), targets(target)
    return lambda: gb.attribute(xt, target=t)


def captum_deeplift(tm, x, target, baseline: float) -> Callable:
    from captum.attr import DeepLift

    dl, xt, t = DeepLift(tm), to_nchw(x), targets(target)
    return lambda: dl.attribute(xt, baselines=baseline, target=t)


def captum_layer_deeplift(tm, layer: str, x, target, baseline: float) -> Callable:
    from captum.attr import LayerDeepLift

    dl, t = LayerDeepLift(tm, getattr(tm, layer)), targets(target)
    xt = to_nchw(x).requires_grad_()  # its hooks need a graph even below the layer
    return lambda: dl.attribute(xt, baselines=baseline, target=t)


def captum_deeplift_shap(tm, x, target, refs: np.ndarray) -> Callable:
    from captum.attr import DeepLiftShap

    dl, xt, t = DeepLiftShap(tm), to_nchw(x), targets(target)
    rt = to_nchw(refs)
    return lambda: dl.attribute(xt, baselines=rt, target=t)


def captum_layer_gradcam(tm, layer: str, x, target) -> Callable:
    from captum.attr import LayerGradCam

    gc, xt, t = LayerGradCam(tm, getattr(tm, layer)), to_nchw(x), targets(target)
    return lambda: gc.attribute(xt, target=t, relu_attributions=True)


def captum_guided_gradcam(tm, layer: str, x, target) -> Callable:
    from captum.attr import GuidedGradCam

    gc, xt, t = GuidedGradCam(tm, getattr(tm, layer)), to_nchw(x), targets(target)
    return lambda: gc.attribute(xt, target=t)


