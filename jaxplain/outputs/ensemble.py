"""Explanations under weight uncertainty: any method, vmapped over a stack of weights.

`P(y | x) = \\int P(y | x, w) P(w) dw` with the integral replaced by members
`w_1..w_M` (a deep ensemble, training checkpoints, MC-dropout masks): one compiled
program evaluates the prediction and the method for every member (`jax.vmap` over
the stacked weights, in groups of `member_batch` run one after another by
`lax.map`) and reduces them to a mean, a spread and the averaged predictive
distribution.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit, members_side_by_side, tuned
from .._core import validate as V
from .._core.cache import traced_cached
from .._core.models import Model
from .._core.types import Array, ArrayLike
from ._common import check_stacked

LINKS = ("softmax", "identity")


class OverWeights(NamedTuple):
    """What `over_weights` returns (a pytree): per-member results and their summaries.

    Attributes:
      results: the method's result for every member, stacked on a leading member
        axis (an `Explanation` of `(M, N, ...)` leaves for attribution methods), or
        None when no method was given.
      values: `(M, N, ...)` the members' attributions (`results.values`, or the
        result itself when the method returns an array); None if neither.
      mean: `(N, ...)` their mean over members.
      std: `(N, ...)` their standard deviation over members (ddof 0: the spread of
        the ensemble itself).
      outputs: `(M, N, classes)` every member's model outputs at `x`.
      predictive: `(N, classes)` the averaged predictive distribution: the mean of
        the members' softmax (`link="softmax"`) or of their outputs (`"identity"`).
    """

    results: Any
    values: Array | None
    mean: Array | None
    std: Array | None
    outputs: Array
    predictive: Array


def over_weights(
    method: Callable | None,
    model_fn: Callable[[Any, jax.Array], jax.Array],
    stacked_params: Any,
    x: ArrayLike,
    *,
    link: str = "softmax",
    member_batch: int | None = None,
    **method_kwargs: Any,
) -> OverWeights:
    """Runs `method` and the prediction for every member of a stack of weights, in one program.

    Member `m` is the model `model_fn(params_m, x)`, with `params_m` the `m`-th slice
    of every leaf of `stacked_params`. The method is called as `method(model_m, x,
    **method_kwargs)` (the same arguments, and the same `key`, for every member:
    differences between members come from their weights alone), all members at
    once under `jax.vmap`. The program is compiled once per method, model function
    and arguments; new weights or inputs of the same shapes reuse it.

    Args:
      method: any jaxplain method (`jaxplain.saliency`, `jaxplain.integrated_gradients`,
        `jaxplain.kernel_shap`, `jaxplain.counterfactual` ...) or a function
        `(model, x, **kwargs) -> result`; None for the prediction only.
      model_fn: `model_fn(params, x_batch) -> outputs (N, classes)`: a Linen
        `module.apply`, `lambda state, z: nnx.merge(graphdef, state)(z)` for NNX, or
        any JAX function of weights and inputs.
      stacked_params: the members' weights, every leaf stacked on a leading axis of
        `M` members (`jax.tree.map(lambda *w: jnp.stack(w), *members)`).
      x: inputs `(N, ...)`.
      link: `"softmax"` (outputs are logits) or `"identity"` (outputs are already
        probabilities, or a regression) for the averaged prediction.
      member_batch: members evaluated side by side (`jax.vmap`); groups of them run
        one after another in the same program (`lax.map`). None: the backend's
        choice, one member at a time where the compile layer's CPU rewrites are on
        (XLA:CPU runs a convolution vmapped over weights as a grouped convolution,
        5-9x slower than the members one after another on the digits CNN), all at
        once elsewhere. The numbers do not depend on it.
      **method_kwargs: the method's arguments (`target=`, `key=`, `steps=` ...).

    Returns:
      An `OverWeights(results, values, mean, std, outputs, predictive)`.

    Raises:
      ValueError, TypeError: invalid arguments, including the method's own (before
        anything compiles).

    References:
      Lakshminarayanan, Pritzel & Blundell, "Simple and Scalable Predictive
      Uncertainty Estimation using Deep Ensembles", NeurIPS 2017. Gal & Ghahramani,
      "Dropout as a Bayesian Approximation", ICML 2016.

    >>> import jax.numpy as jnp, jaxplain as jx
    >>> ws = jnp.stack([jnp.eye(2), 2 * jnp.eye(2), 3 * jnp.eye(2)])  # 3 members
    >>> r = over_weights(jx.saliency, lambda w, z: z @ w, ws, jnp.ones((1, 2)), target=0)
    >>> r.values[:, 0].tolist(), r.mean[0].tolist()
    ([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], [2.0, 0.0])
    """
    if method is not None and not callable(method):
        V.fail("method", "None or a method (model, x, **kwargs) -> result", type(method).__name__,
               TypeError)
    if not callable(model_fn):
        V.fail("model_fn", "a function model_fn(params, x) -> outputs", type(model_fn).__name__,
               TypeError)
    check_stacked(stacked_params, "stacked_params")
    x = V.check_array(x, min_ndim=2)
    V.check_choice(link, "link", LINKS)
    if member_batch is not None:
        member_batch = V.check_int(member_batch, "member_batch", minimum=1)
    first = lambda: jax.tree.map(  # noqa: E731 - one member's shapes
        lambda leaf: jax.ShapeDtypeStruct(V.shape_of(leaf)[1:], V.dtype_of(leaf)), stacked_params)
    out = V.model_call(lambda: traced_cached(lambda: jax.eval_shape(model_fn, first(), x),
                                             Model(model_fn, stacked_params), x, "member"), x)
    if not hasattr(out, "shape") or len(out.shape) < 1 or out.shape[0] != x.shape[0]:
        V.fail("model_fn", f"outputs (N, ...) with N = {x.shape[0]} on x",
               getattr(out, "shape", type(out).__name__))
    program = _program(method, model_fn, _Frozen(tuple(sorted(method_kwargs.items()))), link,
                       member_batch)
    return program(stacked_params, x)


class _Frozen:
    """Keyword arguments as a cache key: arrays by identity, other values by equality.

    The arrays are closed over by the compiled program (a label map must stay
    concrete: its number of labels sets shapes), so the same objects reuse it.
    """

    def __init__(self, items: tuple[tuple[str, Any], ...]):
        self.items = items
        self._key = tuple((k, _key_of(v)) for k, v in items)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Frozen) and self._key == other._key


def _key_of(v: Any) -> Any:
    if isinstance(v, (jax.Array, np.ndarray)):
        return ("array", id(v))
    try:
        hash(v)
    except TypeError:
        return ("object", id(v))
    return ("value", type(v), v)


@functools.lru_cache(maxsize=16)
def _program(method, model_fn, frozen: _Frozen, link: str, member_batch: int | None):
    kwargs = dict(frozen.items)

    def run(stacked, x):
        def member(params):
            model = Model(model_fn, params)
            out = tuned(model, "forward")(x)
            return (None if method is None else method(model, x, **kwargs)), out

        m = jax.tree.leaves(stacked)[0].shape[0]
        k = member_batch if member_batch is not None else members_side_by_side(m)
        if k >= m:
            results, outputs = jax.vmap(member)(stacked)
        else:
            results, outputs = jax.lax.map(member, stacked, batch_size=k)
        values = getattr(results, "values", results if isinstance(results, jax.Array) else None)
        if values is not None and not isinstance(values, jax.Array):
            values = None
        mean = None if values is None else jnp.mean(values, axis=0)
        std = None if values is None else jnp.std(values, axis=0)
        probs = jax.nn.softmax(outputs, axis=-1) if link == "softmax" else outputs
        return OverWeights(results, values, mean, std, outputs, jnp.mean(probs, axis=0))

    return jit(run)
