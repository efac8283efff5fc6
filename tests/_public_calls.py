"""Valid calls of every public function, built from their signatures.

`GOOD` says how to build a valid value of an argument (by name), `CHEAP` gives
small settings so that calls stay fast. `test_bad_inputs` swaps one argument for
a bad value; `test_dispatch` watches warm valid calls. A public function whose
required arguments are all in `GOOD` is covered by both without a hand list.
"""

from __future__ import annotations

import inspect

import jax
import numpy as np

import jaxplain as jx
from jaxplain import testing

N, H, W, C = 2, 8, 8, 3

# ---- a tiny model and valid arguments (built once, lazily) ---------------------------------

_CACHE: dict = {}


def env():
    if not _CACHE:
        m = testing.tiny_cnn(n_classes=3, features=(2,))
        x = np.asarray(testing.random_images(0, n=N, size=H))
        model = jx.from_linen(m, m.init(jax.random.key(0), x[:1]))
        _CACHE.update(
            model=model,
            x=x,
            key=jax.random.key(0),
            seg=jx.grid_segments(H, W, 2),
            attr=np.asarray(testing.random_images(1, n=N, size=H)) - 0.5,
            mask=np.zeros((N, H, W), bool) | (np.arange(W) < 3),
        )
    return _CACHE


GOOD = {  # argument name -> a valid value
    "model": lambda e: e["model"],
    "x": lambda e: e["x"],
    "target": lambda e: 1,
    "key": lambda e: e["key"],
    "segments": lambda e: e["seg"],
    "layer": lambda e: "conv0",
    "neuron": lambda e: 3,
    "references": lambda e: e["x"],
    "explain": lambda e: jx.saliency,
    "attributions": lambda e: e["attr"],
    "mask": lambda e: e["mask"],
    "a": lambda e: e["x"],
    "b": lambda e: e["x"][::-1],
    "images": lambda e: e["x"],
    "maps": lambda e: e["attr"][..., 0],
    "height": lambda e: H,
    "width": lambda e: W,
    "method": lambda e: jx.saliency,
    "methods": lambda e: {"saliency": jx.saliency},
    "image_shape": lambda e: (H, W, C),
    "values": lambda e: np.ones((N, 4), np.float32),
    "sigma": lambda e: 1.0,
    "mode": lambda e: "guided",
}
CHEAP = {  # small settings so that calls which do run stay fast
    "steps": 2,
    "n_samples": 4,
    "n_masks": 4,
    "n_permutations": 2,
    "window": 4,
    "strides": 4,
    "cells": 2,
    "win_size": 3,
}


SKIP_FUNCTIONS = {  # not functions of user data, or tested elsewhere
    "explain_dataset",
    "explain_to_shards",
    "load_results",
    "enable_compilation_cache",
    "to_numpy",
    "as_model",
    "from_linen",
    "from_nnx",
    "from_callable",
    "feature_visualization",
    "evaluate",
    "model_parameter_randomisation",
    "random_logit",
    "superpixels",
    "with_relu_rule",
    "global_importance",
    "global_surrogate",
    "as_target",
    "apply_coalitions",
    "filters",
    "noise_tunnel",
    "resolve_baseline",
    "plan",  # compiles and times one chunk on every call by design; tests/test_plan.py
}


def public_functions():
    out = []
    for name in sorted(getattr(jx, "__all__", [])):
        fn = getattr(jx, name, None)
        if name in SKIP_FUNCTIONS or not inspect.isfunction(fn):
            continue
        out.append((name, fn))
    return out


def good_call(fn):
    """(positional names, keyword names, cheap extra kwargs) for a valid call, or None."""
    sig = inspect.signature(fn)
    pos, kw, extra = [], [], {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        required = p.default is inspect.Parameter.empty
        if p.name in CHEAP and not required:
            extra[p.name] = CHEAP[p.name]
        if (
            p.name == "attributions"
            or required
            or p.name in ("key", "segments")
            and p.default is None
        ):
            if p.name not in GOOD:
                return None
            (pos if p.kind is p.POSITIONAL_OR_KEYWORD else kw).append(p.name)
    return pos, kw, extra


def good_arguments(fn, **overrides):
    """`(positional values, keyword values)` of a valid call of `fn`, with `overrides`."""
    from _method_table import FAMILY_ARGS, env as table_env

    from jaxplain._core.registry import REGISTRY

    pos, kw, extra = good_call(fn)
    e = env()
    entry = REGISTRY.get(fn.__name__)  # a method's family, or a helper's subpackage
    family = FAMILY_ARGS.get(entry.family if entry else fn.__module__.split(".")[1], {})
    args = {n: family[n](table_env()) if n in family else GOOD[n](e) for n in pos + kw}
    args.update(extra)
    args.update(overrides)
    return [args.pop(n) for n in pos], args
