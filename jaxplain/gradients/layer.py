"""Attribution to a layer's units: activations, neurons, gradient x activation, and the
path methods (layer integrated gradients, conductance, internal influence, neuron
conductance).

Every method takes `at="output"` (default) or `at="input"`: the latter attributes
to the layer's *input*, the first positional argument of its `__call__` (what
Captum calls `attribute_to_layer_input=True`), with the same cost. Layers are
named by submodule path (`"conv1"`, `"features/block3"`, `("features",
"block3")`, or for NNX lists `"convs/1"`); `model.layer_names()` lists them.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from .._core import registry
from .._core import layers as _layers
from .._core import validate as V
from .._core import batching
from .._compile import tuned
from .._core.quadrature import RULES, quadrature
from .._core.types import ArrayLike, Explanation
from .._core.models import Model, as_model
from .._core.batching import values_at
from ._shared import NO_TARGET, layer_vjp, n_evals, over_examples, prepare_layer, single_array


# ---- layer attributions ------------------------------------------------------------------


@registry.method("layer", evals=lambda a: 1)
def layer_activations(model: Any, x: ArrayLike, *, layer: Any, at: str = "output",
                      batch_size: int | None = None) -> Explanation:
    """The output (or, with `at="input"`, the input) of `layer` for each example.

    One forward pass. The input is the first positional argument of the
    layer's `__call__`.

    Returns:
      `Explanation` whose `values` are the layer's activations, e.g. `(N, h, w, C)`.
    """
    model, x, _, parts, _ = prepare_layer(model, x, NO_TARGET, layer, at)
    return _activations(model, x, layer=parts, at=at, batch_size=V.check_batch_size(batch_size))


@functools.partial(jit, static_argnames=("layer", "at", "batch_size"))
def _activations(model, x, *, layer, at, batch_size) -> Explanation:
    act = over_examples(lambda xs, _: _layers.probe(model, xs, layer, at=at)[1], x, None,
                        batch_size)
    return Explanation(values=act, n_evals=n_evals(x, 1))


@dataclasses.dataclass(frozen=True)
class NeuronApply:
    """Apply object of `neurons`: the inner model's layer activations, one row per example."""

    inner: Any
    layer: tuple[str, ...]
    at: str

    def __call__(self, params, x):
        _, act = _layers.probe(Model(self.inner, params), x, self.layer, at=self.at)
        return act.reshape(act.shape[0], -1)


def neurons(model: Any, layer: Any, *, at: str = "output") -> Model:
    """The model whose outputs are `layer`'s activations, flattened to `(N, units)`.

    Any method then explains a hidden unit: its `target` is the unit's flat
    index (for an `(N, h, w, C)` activation, `np.ravel_multi_index((i, j, c),
    (h, w, C))`), one per example or for all. This covers Captum's neuron
    methods in one adapter: `saliency(neurons(m, "conv1"), x, target=k)` is
    `NeuronGradient`, and likewise `integrated_gradients`, `deeplift`,
    `guided_backprop`, `deconvnet`, `expected_gradients`, `feature_ablation` ...
    The parameters stay those of `model` (swapping them does not recompile).

    Args:
      model: a Linen or NNX model (`from_linen` / `from_nnx`).
      layer: the layer (submodule path), as in `grad_cam`.
      at: `"output"` or `"input"` (the first positional argument of its `__call__`).

    Raises:
      ValueError: for an unknown layer (listing the available ones) or site.
    """
    model = as_model(model)
    at = _layers.check_site(at)
    parts = _layers.layer_parts(layer)
    model.layer_names()  # a TypeError naming `model` when it has no layer access
    return Model(NeuronApply(model.apply, parts, at), model.params)


@registry.method("layer", evals=lambda a: 1)
def layer_gradient_x_activation(model: Any, x: ArrayLike, *, target: Any, layer: Any,
                                at: str = "output",
                                batch_size: int | None = None) -> Explanation:
    """Gradient of the target with respect to a layer's output, times that output.

    With `at="input"`, the same for the layer's input (the first positional
    argument of its `__call__`). One forward and one backward pass (to the layer).

    Returns:
      `Explanation` with `values` shaped like the layer's activations.

    References:
      Shrikumar et al., "Not Just a Black Box: Learning Important Features Through
      Propagating Activation Differences", 2016 (gradient x input, here at a layer).
    """
    model, x, t, parts, shape = prepare_layer(model, x, target, layer, at)
    single_array(shape, layer, "layer_gradient_x_activation")
    return _grad_x_act(model, x, t, layer=parts, at=at, batch_size=V.check_batch_size(batch_size))


@functools.partial(jit, static_argnames=("layer", "at", "batch_size"))
def _grad_x_act(model, x, target, *, layer, at, batch_size) -> Explanation:
    def chunk(xs, t):
        shape = _layers.activation_shape(model, xs, layer, at)
        _, act, g, _ = layer_vjp(model, t, xs, layer, at, shape)
        return g * act

    return Explanation(values=over_examples(chunk, x, target, batch_size), n_evals=n_evals(x, 1))


_PATH_ARGS = """
    Args:
      model: a Linen or NNX model.
      x: inputs `(N, ...)`.
      target: which output to explain.
      layer: the layer (submodule path).
      baseline: input-space baseline (scalar, one example, or per example).
      steps: quadrature nodes on the path.
      rule: one of `"riemann_left"`, `"riemann_right"`, `"riemann_middle"`,
        `"riemann_trapezoid"`, `"gauss_legendre"`.
      batch_size: model inputs per chunk (`None`: the library default).
      at: `"output"` or `"input"` (the first positional argument of the layer's
        `__call__`).
"""


@registry.method("layer", evals=lambda a: a["steps"] + 3, cheap={"steps": 2})
def layer_integrated_gradients(model: Any, x: ArrayLike, *, target: Any, layer: Any,
                               baseline: Any = 0.0, steps: int = 50, rule: str = "gauss_legendre",
                               batch_size: int | None = None, at: str = "output") -> Explanation:
    """Integrated gradients with respect to a layer's activations.

    The path runs in activation space, from the layer's activations at the
    baseline `A(b)` to those at the input `A(x)`; layers before `layer` see `x`.
    `A` is the layer's output, or with `at="input"` its input (so layer IG at the
    input of the first layer is input-space IG):
    `values = (A(x) - A(b)) * integral_0^1 dF/dA(A(b) + a (A(x) - A(b))) da`.
    The `steps` evaluations are streamed in chunks of `batch_size`.
{args}
    Returns:
      `Explanation` with `values` shaped like the layer's activations and `gap`
      `(N,)`, the completeness gap with respect to the layer:
      `sum(values) - (F(A(x)) - F(A(b)))`.

    References:
      Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML 2017;
      Dhamdhere et al., "How Important Is a Neuron?", ICLR 2019 (layer attribution).
    """
    args, kw, _ = _path_args(model, x, target, layer, baseline, steps, rule, batch_size, at,
                             "layer_integrated_gradients")
    return _layer_ig(*args, **kw)


@functools.partial(jit, static_argnames=("layer", "at", "batch_size"))
def _layer_ig(model, x, target, b, alphas, weights, *, layer, at, batch_size) -> Explanation:
    n, steps = x.shape[0], alphas.shape[0]
    b = V.full_baseline(b.astype(x.dtype), x)
    sl = jax.lax.dynamic_slice_in_dim

    def ends(start, size):  # outputs at x, A(x) and A(x) - A(b), one chunk at a time
        out_x, act_x = _layers.probe(model, sl(x, start, size), layer, at=at)
        _, act_b = _layers.probe(model, sl(b, start, size), layer, at=at)
        return out_x, act_x, act_x - act_b

    out_x, act_x, diff = batching.chunked_map(ends, n, batch_size)
    target = target.bind(out_x)

    def weighted_grads(rows, s):
        scale = (alphas[s] - 1.0).reshape(s.shape + (1,) * (diff.ndim - 1))
        t = target.take(rows)
        xr = x[rows]

        def f(a):  # the model above the layer on the node's activations a
            out, _ = _layers.probe(model, xr, layer, _layers.Replace(a), at=at)
            return jnp.sum(t.select(out))

        node = act_x[rows] + scale.astype(diff.dtype) * diff[rows]
        g = jax.grad(tuned(f, "grad"))(node)
        return weights[s].reshape(scale.shape).astype(g.dtype) * g

    avg_grad = batching.per_example_sum(weighted_grads, n, steps, batch_size)
    values = diff * avg_grad

    def f_b(start, size):  # F with the layer's A set to A(b)
        t = target.take(start + jnp.arange(size, dtype=jnp.int32))
        a_b = _layers.Replace(sl(act_x, start, size) - sl(diff, start, size))
        return t.select(_layers.probe(model, sl(x, start, size), layer, a_b, at=at)[0])

    change = target.select(out_x) - batching.chunked_map(f_b, n, batch_size)
    gap = jnp.sum(values.reshape(n, -1), axis=1) - change
    return Explanation(values=values, gap=gap, n_evals=n_evals(x, steps + 3))


@registry.method("layer", evals=lambda a: a["steps"] + 2, cheap={"steps": 2})
def layer_conductance(model: Any, x: ArrayLike, *, target: Any, layer: Any,
                      baseline: Any = 0.0, steps: int = 50, rule: str = "gauss_legendre",
                      batch_size: int | None = None, at: str = "output") -> Explanation:
    """Conductance of a layer's units: the share of integrated gradients that flows through each.

    Along the input-space path `x(a) = b + a (x - b)` the layer's activations
    `A(a)` move; unit `j` conducts
    `integral_0^1 dF/dA_j(x(a)) * dA_j/da da`,
    with `dA/da` taken exactly by forward-mode differentiation (a JVP along
    `x - b`) at the quadrature nodes. Summed over the units this is, node by
    node, the sum of input-space integrated gradients with the same `steps` and
    `rule`, so it shares IG's completeness when every path from input to output
    crosses the layer. (Captum's `LayerConductance` takes finite differences of
    `A` between neighbouring nodes instead; the two agree as `steps` grows.)
    Per node: one forward, one JVP up to the layer, one backward from the output
    to the layer; the evaluations are streamed in chunks of `batch_size`.
{args}
    Returns:
      `Explanation` with `values` shaped like the layer's activations and `gap`
      `(N,)`: `sum(values) - (F(x) - F(b))`.

    References:
      Dhamdhere, Sundararajan, Yan. How Important Is a Neuron? (ICLR 2019).
    """
    return _path_method(model, x, target, layer, baseline, steps, rule, batch_size, at,
                        "layer_conductance")


@registry.method("layer", evals=lambda a: a["steps"], cheap={"steps": 2})
def internal_influence(model: Any, x: ArrayLike, *, target: Any, layer: Any,
                       baseline: Any = 0.0, steps: int = 50, rule: str = "gauss_legendre",
                       batch_size: int | None = None, at: str = "output") -> Explanation:
    """Internal influence: the layer's gradient averaged along the input-space path.

    `integral_0^1 dF/dA(b + a (x - b)) da` (Leino et al.; Captum's
    `InternalInfluence`): integrated gradients' path in input space, with the
    gradient taken at the layer and not multiplied by any difference. One forward
    and one backward (to the layer) per node, streamed in chunks of `batch_size`.
{args}
    Returns:
      `Explanation` with `values` shaped like the layer's activations.

    References:
      Leino, Sen, Datta, Fredrikson, Li. Influence-Directed Explanations for Deep
      Convolutional Networks (ITC 2018).
    """
    return _path_method(model, x, target, layer, baseline, steps, rule, batch_size, at,
                        "internal_influence")


@registry.method("layer", evals=lambda a: a["steps"], cheap={"steps": 2})
def neuron_conductance(model: Any, x: ArrayLike, *, target: Any, layer: Any, neuron: Any,
                       baseline: Any = 0.0, steps: int = 50, rule: str = "gauss_legendre",
                       batch_size: int | None = None, at: str = "output") -> Explanation:
    """Conductance of the input features through one hidden unit.

    Along the input-space path `x(a) = b + a (x - b)`, input feature `i` conducts
    through unit `k` of the layer
    `(x_i - b_i) * integral_0^1 dF/dA_k(x(a)) * dA_k/dx_i(x(a)) da`
    (Dhamdhere et al.; Captum's `NeuronConductance`). Summed over the input
    features this is, node by node, unit `k`'s `layer_conductance` with the same
    `steps` and `rule`. Per node: one forward and backward from the output to the
    layer, and one forward and backward from the unit to the input; the
    evaluations are streamed in chunks of `batch_size`.
{args}
      neuron: the unit: a flat index into the layer's per-example activation
        (`np.ravel_multi_index((i, j, c), (h, w, C))` for an `(N, h, w, C)`
        activation, as in `neurons`), a tuple of per-axis indices, or one flat
        index per example `(N,)`.

    Returns:
      `Explanation` with `values` shaped like `x`.

    References:
      Dhamdhere, Sundararajan, Yan. How Important Is a Neuron? (ICLR 2019).
    """
    args, kw, shape = _path_args(model, x, target, layer, baseline, steps, rule, batch_size, at,
                                 "neuron_conductance")
    k = _check_neuron(neuron, tuple(shape.shape[1:]), args[1].shape[0])
    return _layer_path(*args, V.to_device(k), kind="neuron", **kw)


def _check_neuron(neuron: Any, unit_shape: tuple[int, ...], n: int) -> Any:
    """`neuron` as one flat unit index per example, `(n,)` int32."""
    units = int(np.prod(unit_shape))
    accepts = (f"a flat unit index in [0, {units}), a tuple of {len(unit_shape)} indices "
               f"into {unit_shape}, or {n} flat indices")
    if isinstance(neuron, tuple):
        if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in neuron):
            V.fail("neuron", accepts, repr(neuron), TypeError)
        if len(neuron) != len(unit_shape):
            V.fail("neuron", accepts, f"{len(neuron)} indices {neuron}")
        if not all(0 <= i < d for i, d in zip(neuron, unit_shape)):
            V.fail("neuron", accepts, f"{neuron} (out of range)")
        neuron = int(np.ravel_multi_index(neuron, unit_shape))
    return V.check_indices(neuron, "neuron", n, units, what=("flat unit index", "unit indices"),
                           accepts=accepts)


for _f in (layer_integrated_gradients, layer_conductance, internal_influence,
           neuron_conductance):
    if _f.__doc__:  # None under python -OO
        _f.__doc__ = _f.__doc__.replace("{args}", _PATH_ARGS)


def _path_args(model, x, target, layer, baseline, steps, rule, batch_size, at, method):
    """The validated arguments of a path method: `(model, x, target, b, alphas, weights)`
    and the static keywords `layer`, `at`, `batch_size`."""
    model, x, t, parts, shape = prepare_layer(model, x, target, layer, at)
    single_array(shape, layer, method)
    b = V.check_baseline(baseline, x)
    steps = V.check_budget(steps, "steps", x.shape[0], fixed=2)
    V.check_choice(rule, "rule", RULES)
    alphas, weights = quadrature(rule, steps)
    batch_size = V.check_batch_size(batch_size)
    return ((model, x, t, b, V.to_device(alphas), V.to_device(weights)),
            dict(layer=parts, at=at, batch_size=batch_size), shape)


def _path_method(model, x, target, layer, baseline, steps, rule, batch_size, at, method):
    args, kw, _ = _path_args(model, x, target, layer, baseline, steps, rule, batch_size, at,
                             method)
    kind = "conductance" if method == "layer_conductance" else "influence"
    return _layer_path(*args, kind=kind, **kw)


@functools.partial(jit, static_argnames=("layer", "at", "kind", "batch_size"))
def _layer_path(model, x, target, b, alphas, weights, neuron=None, *, layer, at, kind,
                batch_size) -> Explanation:
    """The input-path layer methods, by `kind`: `"influence"` (dF/dA averaged),
    `"conductance"` (dF/dA * dA/da, per unit) and `"neuron"` (unit `neuron`'s
    dF/dA_k * dA_k/dx * (x - b), per input feature)."""
    n, steps = x.shape[0], alphas.shape[0]
    shape = _layers.activation_shape(model, x, layer, at)
    b = V.full_baseline(b.astype(x.dtype), x)
    conduct = kind == "conductance"
    if conduct:  # F(x) and F(b) for the gap; F(x) also fixes a "predicted" target
        (f_x, f_b), target = values_at(model, target, [x, b], batch_size)
    else:
        extra = 1 if target.needs_outputs else 0  # a forward at x for a "predicted" target
        target = target.resolve(lambda z: batching.chunked_apply(model, z, batch_size), x)

    def node(rows, s):
        t = target.take(rows)
        delta = x[rows] - b[rows]
        a = alphas[s].reshape(s.shape + (1,) * (x.ndim - 1)).astype(x.dtype)
        z = b[rows] + a * delta
        zero = jnp.zeros((rows.shape[0],) + tuple(shape.shape[1:]), shape.dtype)

        def f(d):
            out, _ = _layers.probe(model, z, layer, d, at=at)
            return jnp.sum(t.select(out))

        g = jax.grad(tuned(f, "grad"))(zero)
        activation = lambda u: _layers.probe(model, u, layer, at=at)[1]  # noqa: E731
        if conduct:  # dA/da along x - b, by forward mode
            _, da = jax.jvp(tuned(activation, "forward"), (z,), (delta,))
            g = g * da
        elif kind == "neuron":  # dF/dA_k * dA_k/dz by one backward from unit k, times x - b
            flat = g.reshape(g.shape[0], -1)
            pick = jax.nn.one_hot(neuron[rows], flat.shape[1], dtype=g.dtype)
            _, pull = jax.vjp(tuned(activation, "grad"), z)
            (g,) = pull((pick * flat).reshape(g.shape))
            g = g * delta
        return weights[s].reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype) * g

    values = batching.per_example_sum(node, n, steps, batch_size)
    if not conduct:
        return Explanation(values=values, n_evals=n_evals(x, steps + extra))
    gap = jnp.sum(values.reshape(n, -1), axis=1) - (f_x - f_b)
    return Explanation(values=values, gap=gap, n_evals=n_evals(x, steps + 2))
