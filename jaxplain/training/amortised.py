"""Amortised Shapley values (FastSHAP): an explainer network, and the method calling it.

`fit_amortised` (in `_fastshap_fit.py`) trains an `AmortisedExplainer` against a
model's masked evaluations; `amortised_shap(model, x, explainer=..., target=...)`
then returns Shapley values over the explainer's segments for a whole batch in one
forward pass of the explainer plus two evaluations of the model per example
(`f(x)` and `f(baseline)`, for the exact efficiency normalisation). It is a
registered method like any other: jit, vmap, the dataset pipeline and progress
bars work on it.

References:
  Jethani, Sudarshan, Covert, Lee & Ranganath, "FastSHAP: Real-Time Shapley Value
  Estimation", ICLR 2022.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from .._compile import jit
from .._core import features, registry
from .._core import validate as V
from .._core.batching import chunked_apply
from .._core.models import as_model
from .._core.targets import as_target
from .._core.types import ArrayLike, Explanation
from ..perturbation.engine import values_rows
from ._fastshap_net import ExplainerNet, Spec, efficient, outputs_2d

FORMAT = "jaxplain-amortised-shap/1"
"""The first field of a saved explainer's JSON header."""


@jax.tree_util.register_pytree_node_class
class AmortisedExplainer:
    """A trained amortised Shapley explainer: a pytree (weights, segments and baseline are
    leaves; the network and shapes are static), so new weights never recompile.

    Built by `jaxplain.fit_amortised`; saved by `save`, read back by
    `AmortisedExplainer.load`; used by `jaxplain.amortised_shap`.

    Attributes:
      spec: the static part (`net`, `input_shape`, baseline `mode`).
      params: the network's variables.
      segments: the label map `(H, W)` int32 the explainer was trained on.
      baseline: the baseline image `(1, H, W, C)` (or broadcastable), None for the
        `"blur"` and `"mean"` modes.
    """

    __slots__ = ("baseline", "params", "segments", "spec")

    def __init__(self, spec: Spec, params: Any, segments: jax.Array, baseline: jax.Array | None):
        self.spec = spec
        self.params = params
        self.segments = segments
        self.baseline = baseline

    def tree_flatten(self):
        return (self.params, self.segments, self.baseline), self.spec

    @classmethod
    def tree_unflatten(cls, spec, children):
        return cls(spec, *children)

    def __repr__(self) -> str:
        return (f"AmortisedExplainer(d={self.d}, n_outputs={self.n_outputs}, "
                f"input_shape={self.spec.input_shape}, features={self.spec.net.features}, "
                f"hidden={self.spec.net.hidden}, baseline={self.spec.mode or 'image'})")

    @property
    def d(self) -> int:
        """The number of features (segments)."""
        return self.spec.d

    @property
    def n_outputs(self) -> int:
        """The model outputs it explains (classes; 1 for scalar-output models)."""
        return self.spec.n_outputs

    def raw(self, x: jax.Array) -> jax.Array:
        """The network's raw values `(N, d, K)` before the efficiency normalisation."""
        return self.spec.net.apply(self.params, x)

    def save(self, path: str | os.PathLike) -> str:
        """Writes the explainer to one file (a JSON header line, then the msgpack bytes of
        `flax.serialization`); returns the path. `AmortisedExplainer.load` reads it."""
        path = os.fspath(path)
        state = {"params": self.params, "segments": self.segments,
                 "baseline": None if self.baseline is None else self.baseline}
        header = json.dumps(dict(header_of(self.spec), format=FORMAT)).encode()
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(header + b"\n")
            f.write(serialization.to_bytes(jax.device_get(state)))
        os.replace(tmp, path)
        return path

    @staticmethod
    def load(path: str | os.PathLike) -> AmortisedExplainer:
        """The explainer `save` wrote to `path`."""
        header, blob = read_file(path, FORMAT)
        spec = spec_of(header)
        state = serialization.from_bytes(template(spec), blob)
        return AmortisedExplainer(spec, jax.tree.map(jnp.asarray, state["params"]),
                                  jnp.asarray(state["segments"]),
                                  None if spec.mode else jnp.asarray(state["baseline"]))


def header_of(spec: Spec) -> dict:
    """The JSON-able description of a `Spec` (what `spec_of` reads back)."""
    return {"d": spec.d, "n_outputs": spec.n_outputs, "features": list(spec.net.features),
            "hidden": spec.net.hidden, "input_shape": list(spec.input_shape),
            "mode": spec.mode}


def spec_of(header: dict) -> Spec:
    net = ExplainerNet(int(header["d"]), int(header["n_outputs"]),
                       tuple(int(f) for f in header["features"]), int(header["hidden"]))
    return Spec(net, tuple(int(s) for s in header["input_shape"]), header["mode"])


def template(spec: Spec) -> dict:
    """Zero arrays shaped like a saved explainer's state (for `from_bytes`)."""
    x = jax.ShapeDtypeStruct((1,) + spec.input_shape, jnp.float32)
    shapes = jax.eval_shape(spec.net.init, jax.random.key(0), x)
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    baseline = None if spec.mode else np.zeros((1,) + spec.input_shape, np.float32)
    return {"params": params, "segments": np.zeros(spec.input_shape[:2], np.int32),
            "baseline": baseline}


def read_file(path: str | os.PathLike, fmt: str) -> tuple[dict, bytes]:
    """`(header, bytes)` of a file written by `save` (or a training checkpoint)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        line = f.readline()
        blob = f.read()
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != fmt:
        V.fail("path", f"a file written by jaxplain ({fmt})", repr(path))
    return header, blob


# ---- the method ------------------------------------------------------------------------------


def check_explainer(explainer: Any, model: Callable, x: jax.Array) -> None:
    """Python-time checks of an explainer against the model and the inputs."""
    if not isinstance(explainer, AmortisedExplainer):
        V.fail("explainer", "an AmortisedExplainer (from jaxplain.fit_amortised or "
               "AmortisedExplainer.load)", type(explainer).__name__, TypeError)
    if tuple(x.shape[1:]) != explainer.spec.input_shape:
        V.fail("x", f"images of shape (N, {', '.join(map(str, explainer.spec.input_shape))}) "
               "(the explainer's training shape)", f"shape {tuple(x.shape)}")
    out = jax.eval_shape(model, jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
    k = int(np.prod(out.shape[1:])) if hasattr(out, "shape") else -1
    if k != explainer.n_outputs:
        V.fail("explainer", f"one trained on a model with {k} outputs per example",
               f"an explainer of {explainer.n_outputs} outputs")


@registry.method("training", evals=lambda a: values_rows(
    int(np.shape(a["x"])[0]), 2, V.check_batch_size(a["batch_size"])))
def amortised_shap(
    model: Callable,
    x: ArrayLike,
    *,
    target: Any,
    explainer: AmortisedExplainer,
    batch_size: int | None = None,
) -> Explanation:
    """Shapley values over segments from a trained amortised explainer (FastSHAP).

    One forward pass of the explainer network gives raw values for every feature
    and model output; the model is evaluated at `x` and at the explainer's baseline,
    and the values are shifted by `(f(x) - f(baseline) - sum) / d`, so efficiency
    holds exactly. Accuracy is the explainer's (see `fit_amortised`'s validation);
    the cost is that of two model evaluations and one small network per example.

    Args:
      model: the model the explainer was trained on (a `Model`, NNX module or
        callable on batches `(B, H, W, C)`).
      x: images `(N, H, W, C)` of the explainer's input shape.
      target: a class index, one per example, `"predicted"`, or None for
        scalar-output models. Callables are refused: the explainer learned the
        Shapley values of each output, and those of a nonlinear function of the
        outputs are not that function of them (wrap the model instead and fit an
        explainer on it).
      explainer: an `AmortisedExplainer` (`fit_amortised`, `AmortisedExplainer.load`).
      batch_size: model inputs per chunk for `f(x)` and `f(baseline)`.

    Returns:
      `Explanation(values (N, d), gap (N,) = sum(values) - (f(x) - f(baseline)),
      n_evals (N,) = 2)`: `n_evals` counts the model evaluations (`f(x)` and
      `f(baseline)`, plus rows a last chunk repeats), not the explainer's forward
      pass, which is one more (small) network per example.

    References:
      Jethani et al., "FastSHAP: Real-Time Shapley Value Estimation", ICLR 2022.
    """
    model = as_model(model)
    x = V.check_array(x, min_ndim=4)
    check_explainer(explainer, model, x)
    if callable(target) and not isinstance(target, str):
        V.fail("target", "a class index, one per example, 'predicted' or None (the "
               "explainer learned each output's values; fit one on a model returning "
               "your scalar instead)", "a callable", TypeError)
    t = as_target(target, model, x)
    batch_size = V.check_batch_size(batch_size)
    return _explain(model, x, t, explainer, batch_size=batch_size)


@functools.partial(jit, static_argnames=("batch_size",))
def _explain(model, x, target, explainer, *, batch_size):
    values, fx, f0, target = explain_all(model, x, target, explainer, batch_size)
    delta = target.select(fx) - target.select(f0)
    phi = jax.vmap(target.select, in_axes=1, out_axes=1)(values)
    n = x.shape[0]
    evals = jnp.asarray(values_rows(n, 2, batch_size), jnp.int32)
    return Explanation(phi, gap=phi.sum(-1) - delta, n_evals=evals)


def explain_all(model, x, target, explainer, batch_size):
    """Traceable: `(values (N, d, K) of every output, f(x) (N, K), f(baseline) (N, K),
    target bound to f(x))`, efficiency exact per output."""
    n = x.shape[0]
    spec = explainer.spec
    seg = jnp.broadcast_to(explainer.segments, (n,) + explainer.segments.shape)
    b = features.make_baseline(spec.mode, explainer.baseline, x, seg, spec.d)
    out = outputs_2d(chunked_apply(model, jnp.concatenate([x, b]), batch_size, repeats=True))
    fx, f0 = out[:n], out[n:]
    raw = explainer.raw(x).astype(jnp.float32)
    return efficient(raw, fx - f0), fx, f0, target.bind(fx)
