"""The attribution methods the demo and `jaxplain explain` run, read from the registry.

A method runs from images and a model when its required arguments are among those
the app can supply: the target, a key (stochastic methods), segments (feature
methods: a grid or SLIC superpixels), references (DeepLIFT-SHAP, expected
gradients) and a layer (CAM and layer methods: the last spatial layer by default).
Its settings are the registry entry's `demo` settings; methods without them run
with their defaults.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from .._core import registry

FAMILIES = ("gradients", "cam", "layer", "perturbation", "shapley")
"""Registry families whose methods attribute a target to the input (or a layer)."""
SUPPLIED = frozenset({"model", "x", "target", "key", "segments", "references", "layer"})
"""Required arguments the app knows how to supply."""
ALIASES = {
    "ig": "integrated_gradients",
    "gxi": "gradient_x_input",
    "guided": "guided_backprop",
    "gradcam": "grad_cam",
    "shap": "kernel_shap",
}
"""Short names the `jaxplain explain --method` option has always accepted."""
BACKWARD_FAMILIES = ("gradients", "cam", "layer")
"""Families whose model evaluations are forward+backward passes."""


def image_methods() -> dict[str, registry.Entry]:
    """Every registered method that runs from images and a model, by name."""
    import jaxplain  # noqa: F401 - registers every method

    return {
        e.name: e
        for e in registry.entries(*FAMILIES)
        if "target" in e.required and set(e.required) <= SUPPLIED
    }


def resolve(name: str) -> registry.Entry:
    """The entry of `name` (or its alias); a one-line `ValueError` listing the choices."""
    methods = image_methods()
    entry = methods.get(ALIASES.get(name, name))
    if entry is None:
        raise ValueError(
            f"--method: expected one of {', '.join(methods)} (or {', '.join(ALIASES)}), "
            f"got {name!r}"
        )
    return entry


def settings(entry: registry.Entry, quick: bool) -> dict[str, Any] | None:
    """The entry's demo settings (quick or full run); None when `quick` leaves it out."""
    demo = entry.demo or {"quick": None, "full": {}}
    chosen = demo.get("quick" if quick else "full")
    if chosen is None:
        return None
    out = dict(chosen)
    if entry.name == "lrp" and "rule" not in out:  # pixels are read into [0, 1]: the box rule
        import jaxplain as jx

        out["rule"] = jx.relevance.epsilon_gamma_box(0.0, 1.0)
    return out


@dataclasses.dataclass
class Inputs:
    """What a method call can be given: the model, the images and every supplied argument.

    `layer` may be None until a method needs it (then the last spatial layer).
    """

    model: Any
    x: jax.Array
    target: Any
    key: jax.Array
    segments: np.ndarray
    references: Any
    layer: str | None = None


def call(entry: registry.Entry, inputs: Inputs, config: dict[str, Any], salt: int = 0):
    """Runs `entry` on `inputs` with `config`; stochastic methods get `fold_in(key, salt)`."""
    kw: dict[str, Any] = {}
    for name in entry.required[2:]:
        if name == "key":
            kw["key"] = jax.random.fold_in(inputs.key, salt)
        elif name == "layer":
            if inputs.layer is None:
                inputs.layer = last_spatial_layer(inputs.model, inputs.x)
            kw["layer"] = inputs.layer
        else:
            kw[name] = getattr(inputs, name)
    return entry.fn(inputs.model, inputs.x, **kw, **config)


def returns_features(entry: registry.Entry) -> bool:
    """The method returns one value per segment (`(N, d)`), not a map."""
    return "segments" in entry.required


def last_spatial_layer(model: Any, x: jax.Array) -> str:
    """The last layer whose output is a spatial map `(N, h, w, c)` (Grad-CAM's usual layer)."""
    try:
        names = list(model.layer_names())
    except (TypeError, AttributeError) as e:
        raise ValueError(f"layer: this model has no named layers ({e}); pass --layer") from None
    for name in reversed(names):
        try:
            act = jax.eval_shape(lambda m, z, n=name: m.probe(z, n)[1], model, x[:1])
        except Exception:  # noqa: BLE001 - a layer that cannot be probed is skipped
            continue
        shape = getattr(act, "shape", ())
        if len(shape) == 4 and shape[1] > 1 and shape[2] > 1:
            return name
    raise ValueError(f"layer: no layer of this model outputs a spatial map (layers {names}); "
                     "pass --layer")


def make_segments(x: Any, kind: str, n: int) -> np.ndarray:
    """Features for the feature methods: a grid of about `n` cells `(H, W)`, or SLIC
    superpixels `(N, H, W)` (about `n` per image)."""
    import jaxplain as jx

    x = np.asarray(x)
    h, w = x.shape[1:3]
    if kind == "grid":
        side = max(1, min(h, w, round(math.sqrt(n))))
        return jx.grid_segments(h, w, side)
    if kind == "slic":
        return jx.superpixels(x, "slic", n_segments=n)
    raise ValueError(f"--segments: expected 'grid' or 'slic', got {kind!r}")


def pixel_maps(results: dict[str, Any], features: dict[str, bool], center: dict[str, bool],
               segments: np.ndarray, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """Every result as an `(N, H, W)` map (channels summed, features painted on their pixels,
    layer maps upsampled); maps with `center[name]` have their per-image mean subtracted."""
    from .. import visualize as viz

    maps = {}
    for name, r in results.items():
        v = viz.as_array(r)
        if features.get(name) or v.ndim == 2:
            v = viz.feature_map(v, segments)
        elif v.ndim == 4:
            v = v.sum(-1)
        v = viz.upsample(v, hw)
        if center.get(name):
            v = v - v.mean(axis=(-2, -1), keepdims=True)
        maps[name] = v
    return maps
