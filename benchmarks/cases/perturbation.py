"""Cases of the perturbation and Shapley families: LIME, KernelSHAP, Shapley sampling and
exact Shapley on one image with grid superpixels, occlusion, feature ablation, RISE.

Settings follow the issues: LIME and KernelSHAP 1000 samples and Shapley sampling
10 permutations on one image with 64 grid superpixels.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

import jaxplain as jx

from .. import peers as P
from .. import twins
from .base import Bench, Ctx, on_device, rel_err, verdict


def _one_image(ctx: Ctx, grid: int = 8):
    x = ctx.images(1)
    t = ctx.targets(x)
    seg = np.asarray(jx.grid_segments(ctx.spec.size, ctx.spec.size, grid))
    return x, t, seg


def lime(ctx: Ctx, fn: Callable) -> Bench:
    ns = 1000
    x, t, seg = _one_image(ctx)
    model, key = ctx.model, jax.random.key(0)
    call = lambda m, xx, t: fn(m, xx, target=t, segments=seg, key=key, n_samples=ns)
    b = Bench(
        1,
        ns,
        {"n_samples": ns, "features": int(seg.max()) + 1, "baseline": 0.0},
        on_device(call, model, x, t),
        x,
        t,
        reported_evals=True,
        note="jaxplain with default arguments (batch_size=None)",
    )
    if ctx.peer("captum"):
        for ppe in [None, 50, 250, 1000] if not ctx.quick else [250]:
            label = "1 (default)" if ppe is None else str(ppe)
            b.peers[f"captum.Lime[perturbations_per_eval={label}]"] = P.captum_lime(
                ctx.torch_model, x, t, seg, n_samples=ns, ppe=ppe
            )
    if ctx.peer("lime"):
        for bs in [10, 250, 1000] if not ctx.quick else [1000]:
            label = "10 (default)" if bs == 10 else str(bs)
            b.peers[f"lime.LimeImageExplainer[batch_size={label}]"] = P.lime_image(
                ctx.torch_model, x, t, seg, n_samples=ns, batch_size=bs
            )
    return b


def kernel_shap(ctx: Ctx, fn: Callable) -> Bench:
    ns = 1000
    x, t, seg = _one_image(ctx)
    model, key = ctx.model, jax.random.key(0)
    call = lambda m, xx, t: fn(m, xx, target=t, segments=seg, key=key, n_samples=ns)
    b = Bench(
        1,
        ns,
        {"n_samples": ns, "features": int(seg.max()) + 1, "baseline": 0.0},
        on_device(call, model, x, t),
        x,
        t,
        reported_evals=True,
        note="jaxplain with default arguments",
    )
    if ctx.peer("captum"):
        for ppe in [None, 250, 1000] if not ctx.quick else [250]:
            label = "1 (default)" if ppe is None else str(ppe)
            b.peers[f"captum.KernelShap[perturbations_per_eval={label}]"] = P.captum_kernel_shap(
                ctx.torch_model, x, t, seg, n_samples=ns, ppe=ppe
            )
    if ctx.peer("shap"):
        b.peers["shap.KernelExplainer[l1_reg=auto (default)]"] = P.shap_kernel(
            ctx.torch_model, x, t, seg, n_samples=ns
        )
        if not ctx.quick:
            b.peers["shap.KernelExplainer[l1_reg=False]"] = P.shap_kernel(
                ctx.torch_model, x, t, seg, n_samples=ns, l1_reg=False
            )
    return b


def shapley_sampling(ctx: Ctx, fn: Callable) -> Bench:
    n_perm = 10
    x, t, seg = _one_image(ctx)
    d = int(seg.max()) + 1
    model, key = ctx.model, jax.random.key(0)
    call = lambda m, xx, t: fn(
        m,
        xx,
        target=t,
        segments=seg,
        key=key,
        n_permutations=n_perm,
    )
    b = Bench(
        1,
        n_perm * d,
        {"n_permutations": n_perm, "features": d, "baseline": 0.0},
        on_device(call, model, x, t),
        x,
        t,
        reported_evals=True,
    )
    if ctx.peer("captum"):
        for ppe in [None, 16, 64] if not ctx.quick else [64]:
            label = "1 (default)" if ppe is None else str(ppe)
            name = f"captum.ShapleyValueSampling[perturbations_per_eval={label}]"
            b.peers[name] = P.captum_shapley_sampling(
                ctx.torch_model, x, t, seg, n_permutations=n_perm, ppe=ppe
            )
            b.peer_evals[name] = 1 + n_perm * d
    return b


def occlusion(ctx: Ctx, fn: Callable) -> Bench:
    n, win = 16, 4
    x = ctx.images(n)
    t = ctx.targets(x)
    model = ctx.model
    call = lambda m, xx, t: fn(m, xx, target=t, window=win, strides=win)
    n_win = (ctx.spec.size // win) ** 2
    b = Bench(
        n,
        n * (n_win + 1),
        {"window": win, "strides": win, "baseline": 0.0},
        on_device(call, model, x, t),
        x,
        t,
        reported_evals=True,
    )
    if ctx.peer("captum"):
        for ppe in [None, 64, 256] if not ctx.quick else [None, 256]:
            label = "1 (default)" if ppe is None else str(ppe)
            b.peers[f"captum.Occlusion[perturbations_per_eval={label}]"] = P.captum_occlusion(
                ctx.torch_model, x, t, window=win, stride=win, ppe=ppe
            )

        def agree(out, peer_out):
            name = min((k for k in peer_out if k.startswith("captum.Occlusion")), default=None)
            if name is None:
                return []
            ref = twins.from_nchw(P.to_numpy(peer_out[name]))
            a = np.asarray(out)
            a = (
                a
                if a.shape == ref.shape
                else np.broadcast_to(a.reshape(a.shape[:3] + (-1,)), ref.shape)
            )
            return [verdict("occlusion", "captum.Occlusion", rel_err(a, ref), 1e-4)]

        b.agreement = agree
    return b


def feature_ablation(ctx: Ctx, fn: Callable) -> Bench:
    """Feature ablation on SLIC superpixels, one label map per image (16 images)."""
    n = 16
    x = ctx.images(n)
    t = ctx.targets(x)
    seg = np.asarray(jx.superpixels(x, "slic", n_segments=50))
    d = int(seg.max()) + 1
    model = ctx.model
    call = lambda m, xx, t: fn(m, xx, target=t, segments=seg)
    b = Bench(
        n,
        n * (d + 1),
        {"segments": "slic per image", "features": d, "baseline": 0.0},
        on_device(call, model, x, t),
        x,
        t,
        reported_evals=True,
        note="both sides ablate every label up to the largest in the batch in every image",
    )
    if ctx.peer("captum"):
        for ppe in [None, 16, 64] if not ctx.quick else [None, 64]:
            label = "1 (default)" if ppe is None else str(ppe)
            b.peers[f"captum.FeatureAblation[perturbations_per_eval={label}]"] = (
                P.captum_feature_ablation(ctx.torch_model, x, t, seg, ppe=ppe)
            )

        def agree(out, peer_out):
            name = min((k for k in peer_out if k.startswith("captum.FeatureAblation")), default=None)
            if name is None:
                return []
            ref = twins.from_nchw(P.to_numpy(peer_out[name]))
            a = np.broadcast_to(np.asarray(jx.to_pixels(out, seg))[..., None], ref.shape)
            return [verdict("feature_ablation", "captum.FeatureAblation", rel_err(a, ref), 1e-4)]

        b.agreement = agree
    return b


def rise(ctx: Ctx, fn: Callable) -> Bench:
    nm = 1000
    x = ctx.images(1)
    t = ctx.targets(x)
    model, key = ctx.model, jax.random.key(0)
    call = lambda m, xx, t: fn(m, xx, target=t, key=key, n_masks=nm)
    return Bench(
        1,
        nm,
        {"n_masks": nm},
        on_device(call, model, x, t),
        x,
        t,
        reported_evals=True,
        note="no peer implements RISE",
    )


def exact_shapley(ctx: Ctx, fn: Callable) -> Bench:
    x, t, _ = _one_image(ctx)
    # 10 features (1024 forwards): with 12 this jaxplain-vs-limit check alone took 37 s of the
    # full run per model; the 12-feature oracle of the sample-efficiency table is separate
    seg = np.asarray(jx.grid_segments(ctx.spec.size, ctx.spec.size, (2, 5)))
    model = ctx.model
    call = lambda m, xx, t: fn(m, xx, target=t, segments=seg)
    return Bench(
        1,
        2**10,
        {"features": 10},
        on_device(call, model, x, t),
        x,
        t,
        reported_evals=True,
    )
