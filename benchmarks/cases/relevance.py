"""Cases of the propagation rules: DeepLIFT (and its layer form), DeepLIFT-SHAP, LRP,
each checked against Captum (and shap's DeepExplainer) on identical weights."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

import jaxplain as jx

from .. import peers as P
from .. import twins
from ..precision import full_precision
from .base import Bench, Ctx, on_device, rel_err, verdict


def _deeplift_agreement(ctx, name, peer, out, ref, gap, x) -> list[dict]:
    """Values vs Captum on average-pool models; on max-pool models, summation to delta.

    Captum's `DeepLift` max-pool rule does not keep summation to delta (on a
    one-conv max-pool net with baseline 0.3 its own convergence delta was up to
    1.9, while the attributions sum to 1e-2..1 per image), so there the values are
    reported, not judged, and jaxplain is checked against the axiom instead.
    """
    err = rel_err(out, ref)
    if ctx.spec.pool == "avg":
        return [verdict(name, peer, err, 1e-4)]
    scale = float(np.max(np.abs(np.asarray(ctx.model(jnp.asarray(x))))))  # the largest logit
    gap = float(np.max(np.abs(np.asarray(gap)))) / max(scale, 1e-30)
    return [
        verdict(f"{name} summation to delta", "f(x) - f(baseline)", gap, 1e-4),
        verdict(name, peer, err, 1e-4, informational=True),
    ]


def deeplift(ctx: Ctx, fn: Callable) -> Bench:
    n, base = 16, 0.0
    x = ctx.images(n)
    t = ctx.targets(x)
    model = ctx.model
    call = lambda m, xx, t: fn(m, xx, target=t, baseline=base)
    b = Bench(n, 2 * n, {"baseline": base}, on_device(call, model, x, t), x, t,
              note="limit = forward+backward of the images and their baselines (Captum runs "
              "exactly that batch); jaxplain also runs one forward at the images for the target")
    if ctx.peer("captum"):
        b.peers["captum.DeepLift"] = P.captum_deeplift(ctx.torch_model, x, t, base)

        def agree(out, peer_out):
            ref = twins.from_nchw(P.to_numpy(peer_out["captum.DeepLift"]))
            e = call(model, x, t)
            checks = _deeplift_agreement(ctx, "deeplift", "captum.DeepLift", out, ref, e.gap, x)
            # at the last conv layer only ReLU, the global pool and the head lie above:
            # Captum's max-pool rule plays no part, so this is judged on both variants
            layer = ctx.spec.last_layer
            peer = P.captum_layer_deeplift(ctx.torch_model, layer, x, t, base)()
            mine = fn(model, x, target=t, baseline=base, layer=layer).values
            checks.append(verdict("layer deeplift", "captum.LayerDeepLift",
                                 rel_err(mine, twins.from_nchw(P.to_numpy(peer))), 1e-4))
            return checks

        b.agreement = agree
    return b


def lrp(ctx: Ctx, fn: Callable) -> Bench:
    """LRP-epsilon (Captum's default rules) is timed; the gamma composite is checked too.

    Captum runs on a twin whose global average pool is a module (see `twins.torch_twin`).
    At epsilon = 1e-9 both sides divide by near-zero layer outputs in float32: against
    a float64 reference (on ReLU networks LRP-0 is gradient x input) Captum's error was
    1.2e-4 and jaxplain's 2.8e-5 (small-avg, 16 images), so that check is judged at
    1e-3; the composite (epsilon 0.25 on the head) at 1e-4.
    """
    n = 16
    x = ctx.images(n)
    t = ctx.targets(x)
    model = ctx.model
    eps = jx.relevance.Epsilon(1e-9)  # Captum's EpsilonRule default
    call = lambda m, xx, t: fn(m, xx, target=t, rule=eps)
    b = Bench(n, n, {"rule": "Epsilon(1e-9)"}, on_device(call, model, x, t), x, t,
              note="agreement also for Gamma(0.25) on the convolutions + Epsilon(0.25) on the head")
    if ctx.peer("captum"):
        tm = twins.torch_twin(ctx.spec, ctx.variables, gap_module=True)
        with full_precision():
            twins.check_twins(lambda z: np.asarray(model(jnp.asarray(z))), tm, x)
        b.peers["captum.LRP"] = P.captum_lrp(tm, x, t)
        composite = P.captum_lrp(tm, x, t, gamma=0.25, epsilon=0.25)

        def agree(out, peer_out):
            ref = twins.from_nchw(P.to_numpy(peer_out["captum.LRP"]))
            checks = [verdict("lrp", "captum.LRP", rel_err(out, ref), 1e-3)]
            n_conv = len(ctx.spec.features)
            gamma = jx.relevance.Gamma(0.25, 1e-9, gamma_bias=False)
            rules = [gamma] * n_conv + [jx.relevance.Epsilon(0.25)]
            mine = fn(model, x, target=t, rule=rules).values
            ref = twins.from_nchw(P.to_numpy(composite()))
            checks.append(verdict("lrp gamma composite", "captum.LRP", rel_err(mine, ref), 1e-4))
            return checks

        b.agreement = agree
    return b


def deeplift_shap(ctx: Ctx, fn: Callable) -> Bench:
    n, m = 16, 8
    x = ctx.images(n)
    t = ctx.targets(x)
    refs = twins.images(m, ctx.spec.size, seed=3)
    model = ctx.model
    call = lambda mm, xx, t: fn(mm, xx, target=t, references=refs)
    b = Bench(n, 2 * n * m, {"references": m}, on_device(call, model, x, t), x, t,
              note="every image against every reference: 2 * 16 * 8 forward+backward rows")
    if ctx.peer("captum"):
        b.peers["captum.DeepLiftShap"] = P.captum_deeplift_shap(ctx.torch_model, x, t, refs)
    if ctx.peer("shap"):
        for ranked in (True, False) if not ctx.quick else (True,):
            label = "ranked_outputs=1" if ranked else "every output (default)"
            b.peers[f"shap.DeepExplainer[{label}]"] = P.shap_deep(
                ctx.torch_model, x, refs, ranked=ranked
            )

    def agree(out, peer_out):
        checks = []
        if "captum.DeepLiftShap" in peer_out.keys():
            ref = twins.from_nchw(P.to_numpy(peer_out["captum.DeepLiftShap"]))
            e = call(model, x, t)
            checks += _deeplift_agreement(
                ctx, "deeplift_shap", "captum.DeepLiftShap", out, ref, e.gap, x
            )
        name = "shap.DeepExplainer[ranked_outputs=1]"
        if name in peer_out.keys():  # shap's rule for max pooling is the one jaxplain uses: judged
            sv = np.asarray(peer_out[name])[..., 0]
            ref = twins.from_nchw(sv)
            checks.append(verdict("deeplift_shap", "shap.DeepExplainer", rel_err(out, ref), 1e-4))
        return checks

    if ctx.peer("captum") or ctx.peer("shap"):
        b.agreement = agree
    return b
