"""Attribution priors: loss terms on a model's attributions, and an optax training step.

`attribution_penalty(method, mask)` returns `penalty(model, x, y, key=None)`, the
mean over examples of `sum(mask * |values| ** power)`, where `values` are the
method's attributions of `x`. With `method="input_gradients"` (the default) and
`target="log_prob_sum"`, `values` is the input gradient of `sum_k log p_k(x)`
and the penalty is Ross et al.'s "right for the right reasons" term; with
`method="expected_gradients"` it is Erion et al.'s expected-gradients prior on
a region. `train_step(optimizer, penalty, lam)` is a jitted optax step on
`cross_entropy + lam * penalty`; the model's weights are traced inputs, so
gradients flow through the attribution's own backward pass (double backprop).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from .._core import validate as V
from .._core.models import as_model
from ..gradients.basic import gradient_x_input, integrated_gradients, saliency
from ..gradients.sampled import expected_gradients, smoothgrad

METHODS: dict[str, Callable] = {
    "input_gradients": saliency,  # Ross et al.: the signed input gradient
    "saliency": saliency,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
    "expected_gradients": expected_gradients,
}
"""The methods a penalty can use (name -> jaxplain function)."""

STOCHASTIC = ("smoothgrad", "expected_gradients")
TARGETS = ("log_prob_sum", "label")
_OWN_ARGS = ("model", "x", "target", "key", "batch_size", "references")


def log_prob_sum(outputs: jax.Array) -> jax.Array:
    """`sum_k log softmax(outputs)_k` per example: Ross et al.'s target."""
    return jnp.sum(jax.nn.log_softmax(outputs, axis=-1), axis=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class AttributionPenalty:
    """`penalty(model, x, y=None, *, key=None) -> scalar`: see `attribution_penalty`."""

    method: str
    mask: np.ndarray
    target: Any
    power: int
    references: Any
    kwargs: tuple

    @property
    def needs_key(self) -> bool:
        return self.method in STOCHASTIC

    def check(self, x_shape: tuple[int, ...], y: Any, key: Any) -> None:
        """Raises (naming the argument) when `x`, `y` or `key` do not fit this penalty."""
        try:
            fits = np.broadcast_shapes(self.mask.shape, tuple(x_shape)) == tuple(x_shape)
        except ValueError:
            fits = False
        if not fits:
            V.fail("mask", f"a mask broadcastable to x's shape {tuple(x_shape)} (one example "
                   f"{tuple(x_shape[1:])} or the batch)", f"shape {self.mask.shape}")
        if self.target == "label":
            if y is None:
                V.fail("y", "integer labels (N,) for target='label'", None, TypeError)
            if tuple(np.shape(y)) != (x_shape[0],) or not jnp.issubdtype(jnp.result_type(y), jnp.integer):
                V.fail("y", f"integer labels of shape ({x_shape[0]},)",
                       f"{jnp.result_type(y)} of shape {tuple(np.shape(y))}")
        if self.needs_key and key is None:
            V.fail("key", f"a jax.random.key for the stochastic method {self.method!r}", None,
                   TypeError)

    def values(self, model: Any, x: jax.Array, y: Any = None, *, key: Any = None) -> jax.Array:
        """The attributions the penalty reads, shaped like `x`."""
        model = as_model(model)
        x = jnp.asarray(x)
        self.check(x.shape, y, key)
        target = log_prob_sum if self.target == "log_prob_sum" else (
            y if self.target == "label" else self.target)
        kw = dict(self.kwargs)
        if self.method == "expected_gradients":
            refs = x if self.references is None else self.references
            kw.update(references=jax.lax.stop_gradient(refs))
        if self.needs_key:
            kw.update(key=key)
        return METHODS[self.method](model, x, target=target, **kw).values

    def __call__(self, model: Any, x: jax.Array, y: Any = None, *, key: Any = None) -> jax.Array:
        v = self.values(model, x, y, key=key)
        a = jnp.abs(v) if self.power == 1 else jnp.square(v)
        per_example = jnp.sum((a * jnp.asarray(self.mask, v.dtype)).reshape(v.shape[0], -1), axis=1)
        return jnp.mean(per_example)


def attribution_penalty(method: str | Callable = "input_gradients", mask: Any = None, *,
                        target: Any = "log_prob_sum", power: int = 2, references: Any = None,
                        **method_kwargs: Any) -> AttributionPenalty:
    """A loss term penalising attribution mass on a region of the input.

    `penalty(model, x, y=None, *, key=None)` is
    `mean_n sum_i mask_i * |values_{n,i}| ** power`, with `values` the attributions
    of `method` on the batch `x`. It is pure and differentiable with respect to the
    model's weights (double backprop), so it can join a training loss (`train_step`).

    Args:
      method: `"input_gradients"` (Ross et al.; the same as `"saliency"`),
        `"saliency"`, `"gradient_x_input"`, `"integrated_gradients"`,
        `"smoothgrad"`, `"expected_gradients"` (Erion et al.), or one of those
        jaxplain functions.
      mask: weights `>= 0` broadcastable to `x` (usually one example's shape, 1 on
        the region whose attributions are penalised, 0 elsewhere).
      target: `"log_prob_sum"` (the default, Ross et al.: the gradient of
        `sum_k log p_k`), `"label"` (the labels `y` passed to the penalty), or any
        jaxplain target (an int, `"predicted"`, a callable `outputs -> (N,)`).
      power: 2 (squared attributions, as Ross et al.) or 1 (absolute values).
      references: for `expected_gradients`, the reference batch; `None` uses the
        training batch itself (Erion et al. draw references from the training data).
      **method_kwargs: settings of the method, e.g. `steps=8`, `n_samples=4` or an
        integrated-gradients `baseline` (checked by the method at each call).

    Returns:
      An `AttributionPenalty`, callable as above.

    Raises:
      ValueError: before anything is compiled, for an unknown `method`, a `mask`
        that is not a finite non-negative array, a bad `power` or `target`, or
        settings the method does not take; at call time, for a `mask` that does
        not broadcast to `x`, or a missing `y` or `key` (TypeError for wrong types).

    References:
      Ross, Hughes, Doshi-Velez. Right for the Right Reasons (IJCAI 2017);
      Erion et al. Improving performance of deep learning models with axiomatic
      attribution priors and expected gradients (Nature Machine Intelligence 2021).

    >>> import jax.numpy as jnp, jaxplain as jx
    >>> m = jx.testing.linear_model(jnp.array([[1.0, 0.0], [-2.0, 0.0]]))  # logits x @ w
    >>> pen = jx.training.attribution_penalty("saliency", jnp.array([0.0, 1.0]), target=0)
    >>> float(pen(m, jnp.ones((3, 2))))  # the squared weight on the masked input
    4.0
    """
    name = _method_name(method)
    if mask is None:
        V.fail("mask", "an array of weights >= 0 broadcastable to x", None, TypeError)
    try:
        m = np.asarray(mask, dtype=np.float32)
    except (TypeError, ValueError):
        V.fail("mask", "an array of weights >= 0 broadcastable to x", type(mask).__name__, TypeError)
    if m.ndim == 0 or not np.all(np.isfinite(m)) or np.any(m < 0):
        V.fail("mask", "a finite array (at least 1-d) of weights >= 0",
               f"shape {m.shape}" if m.ndim == 0 else "negative or non-finite entries")
    if isinstance(power, bool) or power not in (1, 2):
        V.fail("power", "1 or 2", repr(power))
    if isinstance(target, str) and target not in TARGETS + ("predicted",):
        V.fail("target", f"one of {TARGETS + ('predicted',)}, an int or a callable", repr(target))
    if references is not None and name != "expected_gradients":
        V.fail("references", "None unless method='expected_gradients'", type(references).__name__,
               TypeError)
    allowed = [p for p in inspect.signature(METHODS[name]).parameters if p not in _OWN_ARGS]
    for k in method_kwargs:
        if k not in allowed:
            V.fail(k, f"a setting of {name} (one of {allowed})", "an unknown keyword", TypeError)
    return AttributionPenalty(name, m, target, int(power), references,
                              tuple(sorted(method_kwargs.items())))


def _method_name(method: Any) -> str:
    if isinstance(method, str):
        return V.check_choice(method, "method", tuple(METHODS))
    for name, fn in METHODS.items():
        if method is fn and name != "input_gradients":
            return name
    V.fail("method", f"one of {tuple(METHODS)} or one of those jaxplain functions",
           repr(method), TypeError if not callable(method) else ValueError)


def cross_entropy(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of `model(x)` (logits `(N, classes)`) with labels `y`."""
    logp = jax.nn.log_softmax(model(x), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=1))


def attribution_mass(values: jax.Array, mask: Any) -> jax.Array:
    """Per example, the share of `sum |values|` that falls on `mask` (in [0, 1])."""
    a = jnp.abs(values)
    m = jnp.broadcast_to(jnp.asarray(mask, a.dtype), a.shape)
    on = jnp.sum((a * m).reshape(a.shape[0], -1), axis=1)
    return on / jnp.maximum(jnp.sum(a.reshape(a.shape[0], -1), axis=1), jnp.finfo(a.dtype).tiny)


def prior_loss(penalty: AttributionPenalty | None = None, lam: float = 0.0) -> Callable:
    """`loss(model, x, y, key=None) -> (total, {"cross_entropy", "penalty"})` with
    `total = cross_entropy + lam * penalty` (no penalty term when `lam == 0`)."""
    lam = _check_lam(lam, penalty)

    def loss(model, x, y, key=None):
        ce = cross_entropy(model, x, y)
        pen = penalty(model, x, y, key=key) if lam > 0 else jnp.zeros((), ce.dtype)
        return ce + lam * pen, {"cross_entropy": ce, "penalty": pen}

    return loss


def _check_lam(lam: Any, penalty: Any) -> float:
    lam = V.check_float(lam, "lam", minimum=0.0)
    if penalty is not None and not isinstance(penalty, AttributionPenalty):
        V.fail("penalty", "an attribution_penalty(...) or None", type(penalty).__name__, TypeError)
    if penalty is None and lam > 0:
        V.fail("lam", "0 when no penalty is given", lam)
    return lam


def train_step(optimizer: Any, penalty: AttributionPenalty | None = None,
               lam: float = 0.0) -> Callable:
    """A jitted optax step on `cross_entropy + lam * penalty`.

    Returns `step(model, opt_state, x, y, key=None) -> (model, opt_state, logs)`:
    `model` a `Model` (from `from_linen`, `from_nnx` or a callable) whose every
    parameter leaf is trained, `opt_state = optimizer.init(model.params)`, `logs` a
    dict of `loss`, `cross_entropy` and `penalty` (scalars). The weights are traced
    inputs: new weights reuse the compiled step. `key` feeds stochastic penalties
    (`smoothgrad`, `expected_gradients`).

    Raises:
      TypeError: before any compile, for an `optimizer` without `init`/`update`,
        or a `lam` that is not a number.
      ValueError: a negative `lam`, or `lam > 0` without a penalty.

    >>> import jax, jax.numpy as jnp, optax, jaxplain as jx
    >>> m = jx.testing.linear_model(jnp.zeros((2, 2)))
    >>> opt = optax.sgd(0.1)
    >>> step = jx.training.train_step(opt)
    >>> m, s, logs = step(m, opt.init(m.params), jnp.eye(2), jnp.array([0, 1]))
    >>> round(float(logs["loss"]), 4)  # log(2) at zero weights
    0.6931
    """
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        V.fail("optimizer", "an optax GradientTransformation (init, update)",
               type(optimizer).__name__, TypeError)
    loss = prior_loss(penalty, lam)

    def step(model, opt_state, x, y, key=None):
        def total(params):
            return loss(model.replace(params), x, y, key)

        (value, parts), grads = jax.value_and_grad(total, has_aux=True)(model.params)
        updates, opt_state = optimizer.update(grads, opt_state, model.params)
        params = jax.tree.map(lambda p, u: p + u, model.params, updates)
        return model.replace(params), opt_state, {"loss": value, **parts}

    jitted = jit(step)

    def run(model, opt_state, x, y, key=None):
        model = as_model(model)
        if y is None:
            V.fail("y", "integer labels (N,) for the cross-entropy", None, TypeError)
        if penalty is not None and lam > 0:
            penalty.check(tuple(np.shape(x)), y, key)
        return jitted(model, opt_state, jnp.asarray(x), jnp.asarray(y), key)

    return run


__all__ = ["AttributionPenalty", "attribution_mass", "attribution_penalty",
           "cross_entropy", "log_prob_sum", "prior_loss", "train_step"]
