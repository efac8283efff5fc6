"""Cases of the CAM and layer families: Grad-CAM, guided Grad-CAM, neuron conductance,
and the input-path layer methods (layer IG, internal influence, layer conductance),
each against Captum's class on the twin."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import jaxplain as jx

from .. import peers as P
from .. import twins
from .base import Bench, Ctx, on_device, rel_err, same_image_values, verdict


def grad_cam(ctx: Ctx, fn: Callable) -> Bench:
    n = 64
    x = ctx.images(n)
    t = ctx.targets(x)
    model, layer = ctx.model, ctx.spec.last_layer
    call = lambda m, xx, t: fn(m, xx, target=t, layer=layer, upsample=False)
    b = Bench(
        n,
        n,
        {"layer": layer, "relu": True, "upsample": False},
        on_device(call, model, x, t),
        x,
        t,
    )
    if ctx.peer("captum"):
        b.peers["captum.LayerGradCam"] = P.captum_layer_gradcam(ctx.torch_model, layer, x, t)

        def agree(out, peer_out):
            ref = P.to_numpy(peer_out["captum.LayerGradCam"])[:, 0]
            return [verdict("grad_cam", "captum.LayerGradCam", rel_err(out, ref), 1e-5)]

        b.agreement = agree
    return b


def neuron_conductance(ctx: Ctx, fn: Callable) -> Bench:
    n, steps, layer, rule = 8, 20, "conv1", "riemann_middle"
    x = ctx.images(n)
    t = ctx.targets(x)
    h, w, c = (int(d) for d in jx.layer_activations(ctx.model, x[:1], layer=layer).values.shape[1:])
    unit = (h // 2, w // 2, c // 2)
    model = ctx.model
    call = lambda m, xx, t: fn(
        m, xx, target=t, layer=layer, neuron=unit, steps=steps, rule=rule
    )
    b = Bench(
        n,
        n * steps,
        {"layer": layer, "neuron_hwc": list(unit), "steps": steps, "rule": rule},
        on_device(call, model, x, t),
        x,
        t,
        note="limit = one forward+backward per path node; the method also runs a forward "
        "to the layer and a backward from the unit to the input per node (Captum likewise)",
    )
    if ctx.peer("captum"):
        chw = (unit[2], unit[0], unit[1])
        sweep = [None, 40] if not ctx.quick else [40]
        for ibs in sweep:
            label = "None (default)" if ibs is None else str(ibs)
            b.peers[f"captum.NeuronConductance[internal_batch_size={label}]"] = (
                P.captum_neuron_conductance(
                    ctx.torch_model, layer, x, t, chw, steps=steps, method=rule,
                    internal_batch_size=ibs,
                )
            )
        b.agreement = same_image_values(
            "neuron_conductance", next(iter(b.peers)),  # any internal_batch_size: the same values
            tol=1e-5,
        )
    return b


LAYER_PATH = {
    "layer_integrated_gradients": ("LayerIntegratedGradients", True, ""),
    "internal_influence": ("InternalInfluence", True, ""),
    "layer_conductance": (
        "LayerConductance", False,
        "jaxplain also runs one forward-mode pass per node. Agreement is reported, not "
        "judged: Captum multiplies each node's gradient by the activation's change to the next "
        "of n_steps + 1 nodes, jaxplain by its forward-mode derivative at the rule's nodes, two "
        "discretisations of one integral",
    ),
}
"""The input-path layer methods: Captum's class, whether agreement is judged, note."""


MAX_KINK_IMAGES = 1
"""Images a layer-method agreement check may run again on other path nodes."""


def _layer_agreement(name: str, peer: str, out, ref, other_nodes, tol: float = 1e-5) -> dict:
    """Layer values vs Captum's; above `tol`, the images off are run again on other nodes.

    As for IG (`_ig_agreement`), a path node whose ReLU input lies within rounding
    of 0 may take different sides in XLA and PyTorch (and in PyTorch, between a
    batch of nodes and one node alone). Measured (small avg-pool model, 8 images,
    `riemann_middle`): LayerIntegratedGradients at 20 steps had one image off by
    5.3e-4 and 7 within 6e-7; at 21 steps all 8 agreed within 6e-7, at 40 steps
    another image was off by 3.2e-5. A real difference of method would not move
    with the nodes. So a check above `tol` passes when at most `MAX_KINK_IMAGES`
    images are off, the others agree, and the off images agree when both sides
    run them on `steps + 1` nodes (`other_nodes(rows) -> (jaxplain, Captum)`).
    """
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    check = verdict(name, peer, rel_err(out, ref), tol)
    if check["pass"]:
        return check
    scale = max(np.max(np.abs(ref)), 1e-30)
    per = np.max(np.abs(out - ref).reshape(len(out), -1), axis=1) / scale
    off = per > tol
    check.update(off_images=int(off.sum()),
                 rel_err_other_images=float(np.max(per[~off], initial=0)))
    if 0 < off.sum() <= MAX_KINK_IMAGES:
        mine, theirs = (np.asarray(v, np.float64) for v in other_nodes(np.flatnonzero(off)))
        check["rel_err_off_images_other_nodes"] = float(np.max(np.abs(mine - theirs)) / scale)
        check["pass"] = bool(check["rel_err_other_images"] <= tol
                             and check["rel_err_off_images_other_nodes"] <= tol)
    return check


def layer_path_case(name: str):
    cls_name, judged, note = LAYER_PATH[name]

    def build(ctx: Ctx, fn: Callable) -> Bench:
        n, steps, layer, rule = 8, 20, "conv1", "riemann_middle"  # Captum's nodes and weights
        x = ctx.images(n)
        t = ctx.targets(x)
        model, method = ctx.model, fn
        call = lambda m, xx, t: method(m, xx, target=t, layer=layer, steps=steps, rule=rule)
        settings = {"layer": layer, "steps": steps, "rule": rule}
        b = Bench(n, n * steps, settings, on_device(call, model, x, t), x, t,
                  note="limit = one forward+backward per path node" + ("; " + note if note else ""))
        if ctx.peer("captum"):
            sweep = [None, 40] if not ctx.quick else [40]
            for ibs in sweep:
                label = "None (default)" if ibs is None else str(ibs)
                b.peers[f"captum.{cls_name}[internal_batch_size={label}]"] = P.captum_path(
                    cls_name, ctx.torch_model, x, t, layer=layer, steps=steps, method=rule,
                    internal_batch_size=ibs,
                )
            peer = next(iter(b.peers))  # any internal_batch_size gives the same values

            def other_nodes(rows):
                mine = method(model, x[rows], target=t[rows], layer=layer, steps=steps + 1,
                              rule=rule).values
                theirs = P.captum_path(cls_name, ctx.torch_model, x[rows], t[rows], layer=layer,
                                       steps=steps + 1, method=rule)
                return mine, twins.from_nchw(P.to_numpy(theirs()))

            def agree(out, peer_out):
                ref = twins.from_nchw(P.to_numpy(peer_out[peer]))
                if not judged:
                    return [verdict(name, peer, rel_err(out, ref), 1e-5, informational=True)]
                return [_layer_agreement(name, peer, out, ref, other_nodes)]

            b.agreement = agree
        return b

    build.__name__ = name
    return build


def guided_grad_cam(ctx: Ctx, fn: Callable) -> Bench:
    n = 16
    x = ctx.images(n)
    t = ctx.targets(x)
    model, layer = ctx.model, ctx.spec.last_layer
    call = lambda m, xx, t: fn(m, xx, target=t, layer=layer)
    b = Bench(n, 2 * n, {"layer": layer, "interpolation": "nearest"}, on_device(call, model, x, t),
              x, t,
              note="limit = two full forward+backward passes per image; Grad-CAM's backward "
              "stops at the layer, so the true cost is a little lower")
    if ctx.peer("captum"):
        b.peers["captum.GuidedGradCam"] = P.captum_guided_gradcam(ctx.torch_model, layer, x, t)
        b.agreement = same_image_values("guided_grad_cam", "captum.GuidedGradCam")
    return b
