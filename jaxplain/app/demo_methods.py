"""The demo's catalogue of methods and its timing against the physical limit.

`method_specs` lists every method the demo knows with its settings; `available`
keeps those the installed jaxplain offers. `LimitTimer` measures the physical
limit of a method: its model evaluations run as one plain jitted batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from .._compile import tuned
from .._compile import jit

GRADIENT, CAM, PERTURBATION = "gradients", "CNN internals", "perturbation / Shapley"


@dataclass
class Context:
    """What the method calls need: the model, the images, their targets and settings."""

    model: Any
    x: jax.Array
    target: jax.Array
    references: np.ndarray
    segments: np.ndarray
    layer: str
    key: jax.Array
    quick: bool


@dataclass
class MethodSpec:
    name: str
    attr: str
    family: str
    backward: bool  # each model evaluation is a forward+backward pass
    call: Callable[[Context], Any]
    features: bool = False  # returns one value per segment
    quick: bool = True  # part of the --quick selection (one or two per family)
    center: bool = False  # shown relative to the image's mean (maps with a large offset)


def method_specs(quick: bool) -> list[MethodSpec]:
    """Every method the demo knows, with settings sized for `quick` or full runs."""
    q = quick
    k = lambda c, i: jax.random.fold_in(c.key, i)  # noqa: E731
    return [
        MethodSpec(
            "saliency",
            "saliency",
            GRADIENT,
            True,
            lambda c: jx.saliency(c.model, c.x, target=c.target),
        ),
        MethodSpec(
            "gradient x input",
            "gradient_x_input",
            GRADIENT,
            True,
            lambda c: jx.gradient_x_input(c.model, c.x, target=c.target),
            quick=False,
        ),
        MethodSpec(
            "integrated gradients",
            "integrated_gradients",
            GRADIENT,
            True,
            lambda c: jx.integrated_gradients(c.model, c.x, target=c.target, steps=16 if q else 64),
        ),
        MethodSpec(
            "smoothgrad",
            "smoothgrad",
            GRADIENT,
            True,
            lambda c: jx.smoothgrad(
                c.model, c.x, target=c.target, key=k(c, 1), n_samples=16 if q else 50
            ),
        ),
        MethodSpec(
            "expected gradients",
            "expected_gradients",
            GRADIENT,
            True,
            lambda c: jx.expected_gradients(
                c.model,
                c.x,
                target=c.target,
                references=c.references,
                key=k(c, 2),
                n_samples=32 if q else 128,
            ),
            quick=False,
        ),
        MethodSpec(
            "DeepLIFT-SHAP",
            "deeplift_shap",
            GRADIENT,
            True,
            lambda c: jx.deeplift_shap(
                c.model, c.x, target=c.target, references=c.references[: 8 if q else 32]
            ),
            quick=False,
        ),
        MethodSpec(
            "LRP (epsilon-gamma-box)",
            "lrp",
            GRADIENT,
            True,
            lambda c: jx.lrp(c.model, c.x, target=c.target,
                             rule=jx.relevance.epsilon_gamma_box(0.0, 1.0)),  # pixels in [0, 1]
            quick=False,
        ),
        MethodSpec(
            "guided backprop",
            "guided_backprop",
            GRADIENT,
            True,
            lambda c: jx.guided_backprop(c.model, c.x, target=c.target),
        ),
        MethodSpec(
            "Grad-CAM",
            "grad_cam",
            CAM,
            True,
            lambda c: jx.grad_cam(c.model, c.x, target=c.target, layer=c.layer),
        ),
        MethodSpec(
            "Grad-CAM++",
            "grad_cam_plus_plus",
            CAM,
            True,
            lambda c: jx.grad_cam_plus_plus(c.model, c.x, target=c.target, layer=c.layer),
            quick=False,
        ),
        MethodSpec(
            "occlusion",
            "occlusion",
            PERTURBATION,
            False,
            lambda c: jx.occlusion(c.model, c.x, target=c.target, window=4, strides=2),
        ),
        MethodSpec(
            "feature ablation",
            "feature_ablation",
            PERTURBATION,
            False,
            lambda c: jx.feature_ablation(c.model, c.x, target=c.target, segments=c.segments),
            features=True,
            quick=False,
        ),
        MethodSpec(
            "RISE",
            "rise",
            PERTURBATION,
            False,
            lambda c: jx.rise(
                c.model, c.x, target=c.target, key=k(c, 3), n_masks=500 if q else 2000, cells=4
            ),
            quick=False,
            center=True,  # RISE scores sit around p(target): show what is above/below average
        ),
        MethodSpec(
            "LIME",
            "lime",
            PERTURBATION,
            False,
            lambda c: jx.lime(
                c.model,
                c.x,
                target=c.target,
                segments=c.segments,
                key=k(c, 4),
                n_samples=300 if q else 1000,
            ),
            features=True,
        ),
        MethodSpec(
            "KernelSHAP",
            "kernel_shap",
            PERTURBATION,
            False,
            lambda c: jx.kernel_shap(
                c.model,
                c.x,
                target=c.target,
                segments=c.segments,
                key=k(c, 5),
                n_samples=256 if q else 1000,
            ),
            features=True,
        ),
        MethodSpec(
            "Shapley sampling",
            "shapley_sampling",
            PERTURBATION,
            False,
            lambda c: jx.shapley_sampling(
                c.model,
                c.x,
                target=c.target,
                segments=c.segments,
                key=k(c, 6),
                n_permutations=4 if q else 16,
            ),
            features=True,
            quick=False,
        ),
    ]


def available(specs: list[MethodSpec], quick: bool = False) -> list[MethodSpec]:
    """The specs whose function exists in this jaxplain (only the quick selection with `quick`)."""
    return [s for s in specs if hasattr(jx, s.attr) and (s.quick or not quick)]


def _block(tree):
    return jax.tree.map(
        lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, tree
    )


class LimitTimer:
    """The physical limit: seconds for `n` model evaluations run as one jitted batch.

    `limit(n, backward)` times one forward (or forward+backward) pass of the model
    on a batch of `n` copies of the explained images (the best of a few runs, after
    compiling), once per distinct `n`. Batches above `max_batch` are extrapolated
    linearly from `max_batch`.
    """

    def __init__(
        self, model, x: jax.Array, target: jax.Array, repeats: int = 3, max_batch: int = 4096
    ):
        self.model, self.x, self.target = model, x, target
        self.repeats, self.max_batch = repeats, max_batch
        self._fwd = jit(lambda m, z: tuned(m, "grad")(z))  # as the methods run the model
        picked = lambda z, m, t: jnp.take_along_axis(tuned(m, "grad")(z), t[:, None], 1)  # noqa: E731
        self._fb = jit(jax.grad(lambda z, m, t: jnp.sum(picked(z, m, t))))
        self._cache: dict[tuple[int, bool], float] = {}

    def limit(self, n: int, backward: bool) -> float:
        if n > self.max_batch:
            return self.limit(self.max_batch, backward) * n / self.max_batch
        if (n, backward) not in self._cache:
            xb = jnp.resize(self.x, (n,) + self.x.shape[1:])
            tb = jnp.resize(self.target, (n,))
            f, args = (
                (self._fb, (xb, self.model, tb)) if backward else (self._fwd, (self.model, xb))
            )
            _block(f(*args))
            best = float("inf")
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                _block(f(*args))
                best = min(best, time.perf_counter() - t0)
            self._cache[(n, backward)] = best
        return self._cache[(n, backward)]


@dataclass
class Timing:
    name: str
    family: str
    first_s: float
    steady_s: float
    n_evals: int
    limit_s: float | None

    @property
    def ratio(self) -> float | None:
        return self.steady_s / self.limit_s if self.limit_s else None


def run_methods(
    specs: list[MethodSpec], ctx: Context, limits: LimitTimer | None, progress: bool = True
) -> tuple[dict[str, Any], list[Timing], dict[str, str]]:
    """Runs every spec twice (compile, then steady state); returns results, timings and errors."""
    from tqdm.auto import tqdm

    results, timings, errors = {}, [], {}
    for spec in tqdm(specs, desc="explaining", disable=not progress, leave=False):
        try:
            t0 = time.perf_counter()
            r = _block(spec.call(ctx))
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            r = _block(spec.call(ctx))
            steady = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - the demo reports and skips a failing method
            errors[spec.name] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            continue
        n_evals = getattr(r, "n_evals", None)
        n = int(np.sum(np.asarray(n_evals))) if n_evals is not None else 0
        limit = limits.limit(n, spec.backward) if (limits is not None and n) else None
        results[spec.name] = r
        timings.append(Timing(spec.name, spec.family, first, steady, n, limit))
    return results, timings, errors


def pixel_maps(
    results: dict[str, Any], specs: list[MethodSpec], segments: np.ndarray, hw
) -> dict[str, np.ndarray]:
    """Every result as an `(N, H, W)` map (channels summed, features painted on their pixels).

    Maps of specs with `center=True` have their per-image mean subtracted.
    """
    from .. import visualize as viz

    by_name = {s.name: s for s in specs}
    maps = {}
    for name, r in results.items():
        v = viz.as_array(r)
        if by_name[name].features or v.ndim == 2:
            v = viz.feature_map(v, segments)
        elif v.ndim == 4:
            v = v.sum(-1)
        v = viz.upsample(v, hw)
        if by_name[name].center:
            v = v - v.mean(axis=(-2, -1), keepdims=True)
        maps[name] = v
    return maps
