"""The table of benchmark cases: one row per jaxplain method.

A `Case` names the jaxplain function it needs (a case whose function does not
exist yet is skipped with that reason), the kind of model evaluation its limit
uses, and a builder that returns a `Bench`: the jaxplain call, the number of
model evaluations, the peer calls on the PyTorch twin (every configuration of
a sweep, plus the peer's defaults) and optional agreement checks.

`--quick` runs only the fastest peer configuration of each sweep (a smoke run);
the full run adds the peers' defaults and the rest of each sweep.

Settings follow the issues: IG 50 steps on 16 images; Grad-CAM on 64 images;
LIME and KernelSHAP 1000 samples and Shapley sampling 10 permutations on one
image with 64 grid superpixels; deletion 64 steps on 16 images (Quantus PixelFlipping as
its peer); ROAD at 10 fractions on 16 images.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain._core.quadrature import quadrature

from . import peers as P
from . import twins


@dataclasses.dataclass
class Ctx:
    """One benchmark model: Flax module and weights, the jaxplain Model, the twin."""

    spec: twins.Spec
    quick: bool = False
    torch_model: Any = None
    twin_error: float | None = None
    twin_problem: str | None = None

    def __post_init__(self):
        self.module, self.variables = twins.flax_model(self.spec)
        self.model = jx.from_linen(self.module, self.variables)
        module = self.module
        # Split at the last conv layer (for the Grad-CAM limit); created once so jit caches.
        self.features_fn = lambda p, x: module.apply(p, x, method=twins.BenchCNN.last_conv)
        self.head_fn = lambda p, a: module.apply(p, a, method=twins.BenchCNN.head_from)
        self._images: dict[int, np.ndarray] = {}

    def images(self, n: int) -> np.ndarray:
        if n not in self._images:
            self._images[n] = twins.images(n, self.spec.size, seed=1)
        return self._images[n]

    def targets(self, x: np.ndarray) -> np.ndarray:
        """The predicted class of every image (the same on both sides)."""
        return np.asarray(jnp.argmax(self.model(jnp.asarray(x)), -1)).astype(np.int32)

    def peer(self, lib: str) -> bool:
        """True when the twin is verified and `lib` imports."""
        return self.torch_model is not None and P.available(lib)


@dataclasses.dataclass
class Bench:
    """What one case runs on one model."""

    n_images: int
    n_evals: int
    settings: dict
    jaxplain: Callable[[], Any]
    x: np.ndarray
    target: np.ndarray
    memory: tuple[Callable, tuple] | None = None
    """`(fn, args)`: the method as a caller's `jax.jit` compiles it, for its XLA memory
    figure and the program timing; by default the arguments of an `_on_device` call."""
    peers: dict[str, Callable] = dataclasses.field(default_factory=dict)
    peer_evals: dict[str, int] = dataclasses.field(default_factory=dict)
    agreement: Callable[[Any, dict], list[dict]] | None = None
    reported_evals: bool = False
    note: str = ""

    def __post_init__(self):
        if self.memory is None and isinstance(self.jaxplain, functools.partial):
            self.memory = (self.jaxplain.func, self.jaxplain.args)  # the same device arrays


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    method: str
    kind: str  # "fwd" | "fwdbwd" | "fwdbwd_to_layer"
    build: Callable[[Ctx], Bench]
    archs: tuple[str, ...] = ("small",)
    quick: bool = False


def _on_device(call: Callable, model: Any, *arrays: np.ndarray) -> Callable[[], Any]:
    """jaxplain's timed call, `call(model, *arrays)` with the arrays already on device.

    Every side gets its inputs (images, attributions, targets) as its own
    framework's arrays, built once: the limit runs on `jax.Array`s, the peers on
    torch tensors. From NumPy, 16 images of 32x32x3 cost the jitted program about
    0.15 ms more per call on CPU (a copy into the device buffer), 3-4% of a 4 ms
    saliency call. `Bench.memory` compiles the same call on the same arrays, the
    targets among its arguments (not constants folded into the program).
    """
    return functools.partial(call, model, *(jnp.asarray(a) for a in arrays))


def rel_err(a: Any, b: Any) -> float:
    """`max|a - b| / max|b|` over all entries."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _agree(name: str, vs: str, err: float, tol: float, **extra) -> dict:
    return {"check": name, "vs": vs, "rel_err": err, "tol": tol, "pass": bool(err <= tol), **extra}


def _np(t) -> np.ndarray:
    return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)


def _same_image_values(name: str, peer: str, tol: float = 1e-4):
    """An agreement check: jaxplain's values vs the peer's NCHW values, one relative error."""

    def agree(out, peer_out):
        ref = twins.from_nchw(_np(peer_out[peer]))
        return [_agree(name, peer, rel_err(out, ref), tol)]

    return agree


# ---- gradient family ------------------------------------------------------------------


def saliency(ctx: Ctx) -> Bench:
    n = 16
    x = ctx.images(n)
    t = ctx.targets(x)
    model = ctx.model
    call = lambda m, xx, t: jx.saliency(m, xx, target=t)
    b = Bench(
        n,
        n,
        {"absolute": False},
        _on_device(call, model, x, t),
        x,
        t,
    )
    if ctx.peer("captum"):
        b.peers["captum.Saliency"] = P.captum_saliency(ctx.torch_model, x, t)
        b.agreement = _same_image_values("saliency", "captum.Saliency")
    return b


def integrated_gradients(ctx: Ctx) -> Bench:
    n, steps = (16, 50) if ctx.spec.arch == "small" else (8, 50)
    x = ctx.images(n)
    t = ctx.targets(x)
    model, rule = ctx.model, "riemann_trapezoid"
    call = lambda m, xx, t: jx.integrated_gradients(m, xx, target=t, steps=steps, rule=rule)
    b = Bench(
        n,
        n * steps,
        {"steps": steps, "rule": rule, "baseline": 0.0},
        _on_device(call, model, x, t),
        x,
        t,
        note="limit = steps x images forward+backward; the 2 forwards per image for the "
        "completeness gap are part of jaxplain's time",
    )
    if ctx.peer("captum"):
        # internal_batch_size=None runs all n * steps inputs at once: a size equal to that
        # is the same configuration, so it is left out (the large models' 8 x 50)
        sweep = [None] + [s for s in (400, 160) if s < n * steps] if not ctx.quick else [160]
        for ibs in sweep:
            label = "None (default)" if ibs is None else str(ibs)
            b.peers[f"captum.IntegratedGradients[internal_batch_size={label}]"] = P.captum_ig(
                ctx.torch_model, x, t, steps=steps, method=rule, internal_batch_size=ibs
            )
        b.agreement = lambda out, peer_out: _ig_agreement(ctx)
    return b


def _ig_agreement(ctx: Ctx) -> list[dict]:
    """IG vs Captum IG on 4 images, 50 steps, for three rules (like with like).

    Captum's `riemann_trapezoid` uses step weights `1/n` (halved at both ends), which
    sum to `(n-1)/n`; jaxplain's trapezoid weights sum to 1 (`1/(n-1)`). The same
    nodes, so Captum's numbers equal jaxplain's times `(n-1)/n`: compared after
    that rescale. `riemann_middle` and Gauss-Legendre use identical nodes and weights.

    A check above tolerance is examined node by node (`_kinks`): the gradient is
    discontinuous where a ReLU's pre-activation or a max-pool window's runner-up
    lies within float32 rounding of the threshold, and there XLA and PyTorch may
    round to different sides. Measured on the large avg-pool model: one of 50
    trapezoid nodes had a ReLU input of +2.2e-8 in XLA and -1.5e-8 in PyTorch
    (activations up to 0.3), so that node's gradient differed by 5e-3 and the
    IG sum by 1.6e-4, while the other 49 agreed to ~1e-7. Such a check passes
    when few nodes disagree (`MAX_KINK_NODES`) and the sums over the remaining
    nodes agree within the tolerance; the table says how many nodes it set aside.
    """
    x = ctx.images(4)
    t = ctx.targets(x)
    steps, out = 50, []
    for rule, captum_rule, scale in (
        ("riemann_trapezoid", "riemann_trapezoid", (steps - 1) / steps),
        ("riemann_middle", "riemann_middle", 1.0),
        ("gauss_legendre", "gausslegendre", 1.0),
    ):
        a = (
            np.asarray(
                jx.integrated_gradients(ctx.model, x, target=t, steps=steps, rule=rule).values
            )
            * scale
        )
        ref = twins.from_nchw(
            _np(P.captum_ig(ctx.torch_model, x, t, steps=steps, method=captum_rule)())
        )
        err, tol = rel_err(a, ref), 1e-4
        extra = {}
        if err > tol:
            kinks, err_rest = _kinks(ctx, x, t, rule, steps, tol)
            extra = {
                "kink_nodes": kinks,
                "rel_err_other_nodes": err_rest,
                "max_kink_nodes": MAX_KINK_NODES,
            }
        check = _agree(
            f"integrated_gradients[{rule}]",
            "captum.IntegratedGradients",
            err,
            tol,
            steps=steps,
            rescaled=scale != 1.0,
            **extra,
        )
        if extra:
            check["pass"] = kinks_pass(extra["kink_nodes"], extra["rel_err_other_nodes"], tol)
        out.append(check)
    return out


MAX_KINK_NODES = 3
"""Path nodes an IG agreement check may set aside as gradient discontinuities."""


def kinks_pass(kink_nodes: int, rel_err_other_nodes: float, tol: float) -> bool:
    """A check above tolerance passes when 1..MAX_KINK_NODES nodes explain it."""
    return bool(0 < kink_nodes <= MAX_KINK_NODES and rel_err_other_nodes <= tol)


def _kinks(ctx: Ctx, x: np.ndarray, t: np.ndarray, rule: str, steps: int, tol: float):
    """`(nodes whose input gradients disagree, IG rel. error summed over the others)`.

    Per path node `alpha * x` (zero baseline, jaxplain's nodes and weights), the
    gradient from jaxplain's `saliency` and from Captum's `Saliency` on the twin.
    """
    alphas, weights = quadrature(rule, steps)
    gj, gt = [], []
    for alpha in alphas:
        xa = (alpha * x).astype(np.float32)
        gj.append(np.asarray(jx.saliency(ctx.model, xa, target=t).values))
        gt.append(twins.from_nchw(_np(P.captum_saliency(ctx.torch_model, xa, t)())))
    bad = np.array([rel_err(j, r) > tol for j, r in zip(gj, gt)])
    w = np.where(bad, 0.0, weights.astype(np.float64))
    rest = rel_err(np.tensordot(w, np.stack(gj), 1) * x, np.tensordot(w, np.stack(gt), 1) * x)
    return int(bad.sum()), rest


def smoothgrad(ctx: Ctx) -> Bench:
    n, ns, level = 16, 16, 0.15
    x = ctx.images(n)
    t = ctx.targets(x)
    model, key = ctx.model, jax.random.key(0)
    call = lambda m, xx, t: jx.smoothgrad(m, xx, target=t, key=key, n_samples=ns, noise_level=level)
    b = Bench(
        n,
        n * ns,
        {"n_samples": ns, "noise_level": level},
        _on_device(call, model, x, t),
        x,
        t,
    )
    if ctx.peer("captum"):
        stdev = float(level * (x.max() - x.min()))
        for bs in [None, 4] if not ctx.quick else [None]:
            label = "None (default)" if bs is None else str(bs)
            b.peers[f"captum.NoiseTunnel(Saliency)[nt_samples_batch_size={label}]"] = (
                P.captum_smoothgrad(ctx.torch_model, x, t, n_samples=ns, stdev=stdev, batch=bs)
            )
    return b


def expected_gradients(ctx: Ctx) -> Bench:
    n, ns = 16, 32
    x = ctx.images(n)
    refs = twins.images(32, ctx.spec.size, seed=7)
    t = ctx.targets(x)
    model, key = ctx.model, jax.random.key(0)
    call = lambda m, xx, t: jx.expected_gradients(
        m,
        xx,
        target=t,
        references=refs,
        key=key,
        n_samples=ns,
    )
    b = Bench(
        n,
        n * ns,
        {"n_samples": ns, "references": len(refs)},
        _on_device(call, model, x, t),
        x,
        t,
        note="targets are the predicted classes (shap's ranked_outputs=1)",
    )
    if ctx.peer("captum"):
        b.peers["captum.GradientShap"] = P.captum_gradient_shap(
            ctx.torch_model, x, t, refs, n_samples=ns
        )
    if ctx.peer("shap"):
        for bs in [50, 512] if not ctx.quick else [50]:
            label = "50 (default)" if bs == 50 else str(bs)
            b.peers[f"shap.GradientExplainer[batch_size={label}]"] = P.shap_gradient(
                ctx.torch_model, x, refs, n_samples=ns, batch_size=bs
            )
    return b


def guided_backprop(ctx: Ctx) -> Bench:
    n = 16
    x = ctx.images(n)
    t = ctx.targets(x)
    model = ctx.model
    call = lambda m, xx, t: jx.guided_backprop(m, xx, target=t)
    b = Bench(n, n, {}, _on_device(call, model, x, t), x, t)
    if ctx.peer("captum"):
        b.peers["captum.GuidedBackprop"] = P.captum_guided_backprop(ctx.torch_model, x, t)
        b.agreement = _same_image_values("guided_backprop", "captum.GuidedBackprop")
    return b


def _deeplift_agreement(ctx, name, peer, out, ref, gap, x) -> list[dict]:
    """Values vs Captum on average-pool models; on max-pool models, summation to delta.

    Captum's `DeepLift` max-pool rule does not keep summation to delta (on a
    one-conv max-pool net with baseline 0.3 its own convergence delta was up to
    1.9, while the attributions sum to 1e-2..1 per image), so there the values are
    reported, not judged, and jaxplain is checked against the axiom instead.
    """
    err = rel_err(out, ref)
    if ctx.spec.pool == "avg":
        return [_agree(name, peer, err, 1e-4)]
    scale = float(np.max(np.abs(np.asarray(ctx.model(jnp.asarray(x))))))  # the largest logit
    gap = float(np.max(np.abs(np.asarray(gap)))) / max(scale, 1e-30)
    return [
        _agree(f"{name} summation to delta", "f(x) - f(baseline)", gap, 1e-4),
        _agree(name, peer, err, 1e-4, informational=True),
    ]


def deeplift(ctx: Ctx) -> Bench:
    n, base = 16, 0.0
    x = ctx.images(n)
    t = ctx.targets(x)
    model = ctx.model
    call = lambda m, xx, t: jx.deeplift(m, xx, target=t, baseline=base)
    b = Bench(n, 2 * n, {"baseline": base}, _on_device(call, model, x, t), x, t,
              note="limit = forward+backward of the images and their baselines (Captum runs "
              "exactly that batch); jaxplain also runs one forward at the images for the target")
    if ctx.peer("captum"):
        b.peers["captum.DeepLift"] = P.captum_deeplift(ctx.torch_model, x, t, base)

        def agree(out, peer_out):
            ref = twins.from_nchw(_np(peer_out["captum.DeepLift"]))
            e = call(model, x, t)
            checks = _deeplift_agreement(ctx, "deeplift", "captum.DeepLift", out, ref, e.gap, x)
            # at the last conv layer only ReLU, the global pool and the head lie above:
            # Captum's max-pool rule plays no part, so this is judged on both variants
            layer = ctx.spec.last_layer
            peer = P.captum_layer_deeplift(ctx.torch_model, layer, x, t, base)()
            mine = jx.deeplift(model, x, target=t, baseline=base, layer=layer).values
            checks.append(_agree("layer deeplift", "captum.LayerDeepLift",
                                 rel_err(mine, twins.from_nchw(_np(peer))), 1e-4))
            return checks

        b.agreement = agree
    return b


def lrp(ctx: Ctx) -> Bench:
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
    call = lambda m, xx, t: jx.lrp(m, xx, target=t, rule=eps)
    b = Bench(n, n, {"rule": "Epsilon(1e-9)"}, _on_device(call, model, x, t), x, t,
              note="agreement also for Gamma(0.25) on the convolutions + Epsilon(0.25) on the head")
    if ctx.peer("captum"):
        tm = twins.torch_twin(ctx.spec, ctx.variables, gap_module=True)
        twins.check_twins(lambda z: np.asarray(model(jnp.asarray(z))), tm, x)
        b.peers["captum.LRP"] = P.captum_lrp(tm, x, t)
        composite = P.captum_lrp(tm, x, t, gamma=0.25, epsilon=0.25)

        def agree(out, peer_out):
            ref = twins.from_nchw(_np(peer_out["captum.LRP"]))
            checks = [_agree("lrp", "captum.LRP", rel_err(out, ref), 1e-3)]
            n_conv = len(ctx.spec.features)
            gamma = jx.relevance.Gamma(0.25, 1e-9, gamma_bias=False)
            rules = [gamma] * n_conv + [jx.relevance.Epsilon(0.25)]
            mine = jx.lrp(model, x, target=t, rule=rules).values
            ref = twins.from_nchw(_np(composite()))
            checks.append(_agree("lrp gamma composite", "captum.LRP", rel_err(mine, ref), 1e-4))
            return checks

        b.agreement = agree
    return b


def deeplift_shap(ctx: Ctx) -> Bench:
    n, m = 16, 8
    x = ctx.images(n)
    t = ctx.targets(x)
    refs = twins.images(m, ctx.spec.size, seed=3)
    model = ctx.model
    call = lambda mm, xx, t: jx.deeplift_shap(mm, xx, target=t, references=refs)
    b = Bench(n, 2 * n * m, {"references": m}, _on_device(call, model, x, t), x, t,
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
            ref = twins.from_nchw(_np(peer_out["captum.DeepLiftShap"]))
            e = call(model, x, t)
            checks += _deeplift_agreement(
                ctx, "deeplift_shap", "captum.DeepLiftShap", out, ref, e.gap, x
            )
        name = "shap.DeepExplainer[ranked_outputs=1]"
        if name in peer_out.keys():  # shap's rule for max pooling is the one jaxplain uses: judged
            sv = np.asarray(peer_out[name])[..., 0]
            ref = twins.from_nchw(sv)
            checks.append(_agree("deeplift_shap", "shap.DeepExplainer", rel_err(out, ref), 1e-4))
        return checks

    if ctx.peer("captum") or ctx.peer("shap"):
        b.agreement = agree
    return b


def grad_cam(ctx: Ctx) -> Bench:
    n = 64
    x = ctx.images(n)
    t = ctx.targets(x)
    model, layer = ctx.model, ctx.spec.last_layer
    call = lambda m, xx, t: jx.grad_cam(m, xx, target=t, layer=layer, upsample=False)
    b = Bench(
        n,
        n,
        {"layer": layer, "relu": True, "upsample": False},
        _on_device(call, model, x, t),
        x,
        t,
    )
    if ctx.peer("captum"):
        b.peers["captum.LayerGradCam"] = P.captum_layer_gradcam(ctx.torch_model, layer, x, t)

        def agree(out, peer_out):
            ref = _np(peer_out["captum.LayerGradCam"])[:, 0]
            return [_agree("grad_cam", "captum.LayerGradCam", rel_err(out, ref), 1e-5)]

        b.agreement = agree
    return b


def neuron_conductance(ctx: Ctx) -> Bench:
    n, steps, layer, rule = 8, 20, "conv1", "riemann_middle"
    x = ctx.images(n)
    t = ctx.targets(x)
    h, w, c = (int(d) for d in jx.layer_activations(ctx.model, x[:1], layer=layer).values.shape[1:])
    unit = (h // 2, w // 2, c // 2)
    model = ctx.model
    call = lambda m, xx, t: jx.neuron_conductance(
        m, xx, target=t, layer=layer, neuron=unit, steps=steps, rule=rule
    )
    b = Bench(
        n,
        n * steps,
        {"layer": layer, "neuron_hwc": list(unit), "steps": steps, "rule": rule},
        _on_device(call, model, x, t),
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
        b.agreement = _same_image_values(
            "neuron_conductance", "captum.NeuronConductance[internal_batch_size=None (default)]",
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
    check = _agree(name, peer, rel_err(out, ref), tol)
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


def _layer_path_case(name: str):
    cls_name, judged, note = LAYER_PATH[name]

    def build(ctx: Ctx) -> Bench:
        n, steps, layer, rule = 8, 20, "conv1", "riemann_middle"  # Captum's nodes and weights
        x = ctx.images(n)
        t = ctx.targets(x)
        model, method = ctx.model, getattr(jx, name)
        call = lambda m, xx, t: method(m, xx, target=t, layer=layer, steps=steps, rule=rule)
        settings = {"layer": layer, "steps": steps, "rule": rule}
        b = Bench(n, n * steps, settings, _on_device(call, model, x, t), x, t,
                  note="limit = one forward+backward per path node" + ("; " + note if note else ""))
        if ctx.peer("captum"):
            sweep = [None, 40] if not ctx.quick else [40]
            for ibs in sweep:
                label = "None (default)" if ibs is None else str(ibs)
                b.peers[f"captum.{cls_name}[internal_batch_size={label}]"] = P.captum_path(
                    cls_name, ctx.torch_model, x, t, layer=layer, steps=steps, method=rule,
                    internal_batch_size=ibs,
                )
            peer = f"captum.{cls_name}[internal_batch_size=None (default)]"

            def other_nodes(rows):
                mine = method(model, x[rows], target=t[rows], layer=layer, steps=steps + 1,
                              rule=rule).values
                fn = P.captum_path(cls_name, ctx.torch_model, x[rows], t[rows], layer=layer,
                                   steps=steps + 1, method=rule)
                return mine, twins.from_nchw(_np(fn()))

            def agree(out, peer_out):
                ref = twins.from_nchw(_np(peer_out[peer]))
                if not judged:
                    return [_agree(name, peer, rel_err(out, ref), 1e-5, informational=True)]
                return [_layer_agreement(name, peer, out, ref, other_nodes)]

            b.agreement = agree
        return b

    build.__name__ = name
    return build


def guided_grad_cam(ctx: Ctx) -> Bench:
    n = 16
    x = ctx.images(n)
    t = ctx.targets(x)
    model, layer = ctx.model, ctx.spec.last_layer
    call = lambda m, xx, t: jx.guided_grad_cam(m, xx, target=t, layer=layer)
    b = Bench(n, 2 * n, {"layer": layer, "interpolation": "nearest"}, _on_device(call, model, x, t),
              x, t,
              note="limit = two full forward+backward passes per image; Grad-CAM's backward "
              "stops at the layer, so the true cost is a little lower")
    if ctx.peer("captum"):
        b.peers["captum.GuidedGradCam"] = P.captum_guided_gradcam(ctx.torch_model, layer, x, t)
        b.agreement = _same_image_values("guided_grad_cam", "captum.GuidedGradCam")
    return b


# ---- perturbation family --------------------------------------------------------------


def _one_image(ctx: Ctx, grid: int = 8):
    x = ctx.images(1)
    t = ctx.targets(x)
    seg = np.asarray(jx.grid_segments(ctx.spec.size, ctx.spec.size, grid))
    return x, t, seg


def lime(ctx: Ctx) -> Bench:
    ns = 1000
    x, t, seg = _one_image(ctx)
    model, key = ctx.model, jax.random.key(0)
    call = lambda m, xx, t: jx.lime(m, xx, target=t, segments=seg, key=key, n_samples=ns)
    b = Bench(
        1,
        ns,
        {"n_samples": ns, "features": int(seg.max()) + 1, "baseline": 0.0},
        _on_device(call, model, x, t),
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


def kernel_shap(ctx: Ctx) -> Bench:
    ns = 1000
    x, t, seg = _one_image(ctx)
    model, key = ctx.model, jax.random.key(0)
    call = lambda m, xx, t: jx.kernel_shap(m, xx, target=t, segments=seg, key=key, n_samples=ns)
    b = Bench(
        1,
        ns,
        {"n_samples": ns, "features": int(seg.max()) + 1, "baseline": 0.0},
        _on_device(call, model, x, t),
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


def shapley_sampling(ctx: Ctx) -> Bench:
    n_perm = 10
    x, t, seg = _one_image(ctx)
    d = int(seg.max()) + 1
    model, key = ctx.model, jax.random.key(0)
    call = lambda m, xx, t: jx.shapley_sampling(
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
        _on_device(call, model, x, t),
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


def occlusion(ctx: Ctx) -> Bench:
    n, win = 16, 4
    x = ctx.images(n)
    t = ctx.targets(x)
    model = ctx.model
    call = lambda m, xx, t: jx.occlusion(m, xx, target=t, window=win, strides=win)
    n_win = (ctx.spec.size // win) ** 2
    b = Bench(
        n,
        n * (n_win + 1),
        {"window": win, "strides": win, "baseline": 0.0},
        _on_device(call, model, x, t),
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
            ref = twins.from_nchw(_np(peer_out[name]))
            a = np.asarray(out)
            a = (
                a
                if a.shape == ref.shape
                else np.broadcast_to(a.reshape(a.shape[:3] + (-1,)), ref.shape)
            )
            return [_agree("occlusion", "captum.Occlusion", rel_err(a, ref), 1e-4)]

        b.agreement = agree
    return b


def feature_ablation(ctx: Ctx) -> Bench:
    """Feature ablation on SLIC superpixels, one label map per image (16 images)."""
    n = 16
    x = ctx.images(n)
    t = ctx.targets(x)
    seg = np.asarray(jx.superpixels(x, "slic", n_segments=50))
    d = int(seg.max()) + 1
    model = ctx.model
    call = lambda m, xx, t: jx.feature_ablation(m, xx, target=t, segments=seg)
    b = Bench(
        n,
        n * (d + 1),
        {"segments": "slic per image", "features": d, "baseline": 0.0},
        _on_device(call, model, x, t),
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
            ref = twins.from_nchw(_np(peer_out[name]))
            a = np.broadcast_to(np.asarray(jx.to_pixels(out, seg))[..., None], ref.shape)
            return [_agree("feature_ablation", "captum.FeatureAblation", rel_err(a, ref), 1e-4)]

        b.agreement = agree
    return b


def rise(ctx: Ctx) -> Bench:
    nm = 1000
    x = ctx.images(1)
    t = ctx.targets(x)
    model, key = ctx.model, jax.random.key(0)
    call = lambda m, xx, t: jx.rise(m, xx, target=t, key=key, n_masks=nm)
    return Bench(
        1,
        nm,
        {"n_masks": nm},
        _on_device(call, model, x, t),
        x,
        t,
        reported_evals=True,
        note="no peer implements RISE",
    )


def deletion(ctx: Ctx) -> Bench:
    n, steps = 16, 64
    x = ctx.images(n)
    t = ctx.targets(x)
    model = ctx.model
    sal = np.asarray(jx.saliency(model, x, target=t).values) if hasattr(jx, "saliency") else x
    # One value per pixel, made tie-free with jaxplain's own order (ties by pixel
    # index): Quantus breaks ties arbitrarily (unstable argsort), see P.distinct_ranks.
    attr = P.distinct_ranks(sal.sum(-1))
    call = lambda m, xx, aa, t: jx.deletion(m, xx, aa, target=t, steps=steps)
    size = ctx.spec.size
    b = Bench(
        n,
        n * (steps + 1),
        {"steps": steps, "baseline": "zero", "attributions": "saliency (channel sum), tie-free"},
        # attributions as an argument: a captured constant makes XLA constant-fold the sort
        _on_device(call, model, x, attr, t),
        x,
        t,
        reported_evals=False,
        note="limit = (steps + 1) forwards per image",
    )
    if ctx.peer("quantus") and (size * size) % steps == 0:
        name = "quantus.PixelFlipping"
        b.peers[name] = P.quantus_pixel_flipping(
            ctx.torch_model, x, t, attr, pixels_per_step=size * size // steps
        )
        b.peer_evals[name] = n * steps  # Quantus skips the unperturbed image
        b.note += (
            "; Quantus PixelFlipping: logits, baseline 0.0, the same pixels per step, "
            "steps forwards per image (jaxplain also evaluates the unperturbed image)"
        )

        def agree(out, peer_out):
            ours = np.asarray(out)[:, 1:]  # values after 1..steps removal steps
            ref = np.asarray(peer_out[name], np.float64)
            return [_agree("deletion", name, rel_err(ours, ref), 1e-4, steps=steps)]

        b.agreement = agree
    else:
        b.note += "; no peer (Quantus is not installed or the twin is not verified)"
    return b


def road(ctx: Ctx) -> Bench:
    """ROAD (MoRF, noisy linear imputation) at 10 fractions on 16 images.

    No peer: Quantus 0.6.0's `ROAD` fails on RGB inputs (it broadcasts the
    attributions over the channels, ranks C * H * W entries and indexes the
    H * W imputation grid with them: IndexError), and no other peer implements it.
    """
    n, fractions = 16, tuple(round(0.1 * i, 1) for i in range(10))
    x = ctx.images(n)
    t = ctx.targets(x)
    model, key = ctx.model, jax.random.key(0)
    sal = np.asarray(jx.saliency(model, x, target=t).values) if hasattr(jx, "saliency") else x
    attr = P.distinct_ranks(sal.sum(-1))
    call = lambda m, xx, aa, t: jx.road(m, xx, aa, target=t, key=key, fractions=fractions)
    return Bench(
        n,
        n * len(fractions),
        {"fractions": list(fractions), "order": "morf", "noise_std": 0.01},
        _on_device(call, model, x, attr, t),
        x,
        t,
        note="limit = one forward per image and fraction; jaxplain's time also holds the "
        "linear solves of the imputation; no peer (Quantus 0.6.0 ROAD fails on RGB inputs)",
    )


def exact_shapley(ctx: Ctx) -> Bench:
    x, t, _ = _one_image(ctx)
    # 10 features (1024 forwards): with 12 this jaxplain-vs-limit check alone took 37 s of the
    # full run per model; the 12-feature oracle of the sample-efficiency table is separate
    seg = np.asarray(jx.grid_segments(ctx.spec.size, ctx.spec.size, (2, 5)))
    model = ctx.model
    call = lambda m, xx, t: jx.exact_shapley(m, xx, target=t, segments=seg)
    return Bench(
        1,
        2**10,
        {"features": 10},
        _on_device(call, model, x, t),
        x,
        t,
        reported_evals=True,
    )


CASES: tuple[Case, ...] = (
    Case("saliency", "saliency", "fwdbwd", saliency, ("small", "large"), quick=True),
    Case(
        "integrated_gradients",
        "integrated_gradients",
        "fwdbwd",
        integrated_gradients,
        ("small", "large"),
        quick=True,
    ),
    Case("smoothgrad", "smoothgrad", "fwdbwd", smoothgrad),
    Case("expected_gradients", "expected_gradients", "fwdbwd", expected_gradients),
    Case("guided_backprop", "guided_backprop", "fwdbwd", guided_backprop),
    Case("deeplift", "deeplift", "fwdbwd", deeplift),
    Case("deeplift_shap", "deeplift_shap", "fwdbwd", deeplift_shap),
    Case("lrp", "lrp", "fwdbwd", lrp),
    Case("grad_cam", "grad_cam", "fwdbwd_to_layer", grad_cam, ("small", "large"), quick=True),
    Case("guided_grad_cam", "guided_grad_cam", "fwdbwd", guided_grad_cam),
    Case("neuron_conductance", "neuron_conductance", "fwdbwd", neuron_conductance),
    *(Case(name, name, "fwdbwd", _layer_path_case(name)) for name in LAYER_PATH),
    Case("lime", "lime", "fwd", lime, quick=True),
    Case("kernel_shap", "kernel_shap", "fwd", kernel_shap, quick=True),
    Case("shapley_sampling", "shapley_sampling", "fwd", shapley_sampling, quick=True),
    Case("exact_shapley", "exact_shapley", "fwd", exact_shapley),
    Case("occlusion", "occlusion", "fwd", occlusion),
    Case("feature_ablation", "feature_ablation", "fwd", feature_ablation),
    Case("rise", "rise", "fwd", rise),
    Case("deletion", "deletion", "fwd", deletion),
    Case("road", "road", "fwd", road),
)
"""Every case; `python -m benchmarks --only NAME` selects by `Case.name`."""
