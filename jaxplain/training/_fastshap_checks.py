"""Argument checks of `fit_amortised`: segments, the model's outputs, the explainer's
layout and the validation set, each raising a clear error before anything compiles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._core import features
from .._core import validate as V
from .._core.targets import as_target
from ._fastshap_net import ExplainerNet


def check_segments(segments: Any, x: jax.Array) -> tuple[jax.Array, int]:
    shape = tuple(np.shape(segments)) if not isinstance(segments, (str, bytes)) else ()
    if len(shape) != 2:
        V.fail("segments", f"one label map {tuple(x.shape[1:3])} shared by every image "
               "(the explainer's features)", f"shape {shape}" if shape else repr(segments),
               TypeError if segments is None or isinstance(segments, (str, bytes)) else ValueError)
    _, d = features.check_segments(segments, (1,) + tuple(x.shape[1:3]))
    if d < 2:
        V.fail("segments", "at least 2 features (one feature's value is f(x) - f(baseline))",
               f"{d} feature")
    return jax.device_put(np.asarray(segments).astype(np.int32)), d  # no eager op


def n_outputs(model: Callable, x: jax.Array) -> int:
    out = V.model_call(lambda: jax.eval_shape(model, jax.ShapeDtypeStruct(
        (1,) + tuple(x.shape[1:]), x.dtype)), x)
    if not hasattr(out, "shape"):
        V.fail("model", "outputs that are one array (N, ...)", jax.tree.structure(out), TypeError)
    return int(np.prod(out.shape[1:]))


def check_net(feats: Any, hidden: Any, d: int, k: int) -> ExplainerNet:
    if not isinstance(feats, (tuple, list)) or not all(
            isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in feats):
        V.fail("features", "a tuple of conv channel counts (ints >= 1)", repr(feats), TypeError)
    return ExplainerNet(d, k, tuple(feats), V.check_int(hidden, "hidden"))


def check_validation(val: Any, model: Callable, x: jax.Array, d: int):
    """`(x_val, bound target or None, values or None)`, or None."""
    if val is None:
        return None
    if isinstance(val, tuple) and len(val) == 3:
        x_val, target, values = val
    elif isinstance(val, (tuple, list, dict, str)):
        V.fail("validation", "held-out images (M, H, W, C) or a tuple (x_val, target, "
               "values (M, d))", f"{type(val).__name__} of {len(val)}", TypeError)
    else:
        x_val, target, values = val, None, None
    x_val = V.check_array(x_val, "validation", min_ndim=4)
    if tuple(x_val.shape[1:]) != tuple(x.shape[1:]):
        V.fail("validation", f"images shaped like x_train {tuple(x.shape[1:])}",
               f"shape {tuple(x_val.shape)}")
    if values is None:
        return x_val, None, None
    t = as_target(target, model, x_val).resolve(model, x_val)
    values = V.check_array(values, "validation values", min_ndim=2)
    if tuple(values.shape) != (x_val.shape[0], d):
        V.fail("validation values", f"reference Shapley values ({x_val.shape[0]}, {d})",
               f"shape {tuple(values.shape)}")
    return x_val, t, values
