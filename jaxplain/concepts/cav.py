"""Concept activation vectors: a linear classifier at a layer, fitted on device.

A CAV is the unit normal of the boundary that an L2-regularised logistic
regression draws between the activations of concept examples and those of
random examples at one layer (Kim et al., ICML 2018). The regression is solved
by Newton's method in its dual form: by the representer theorem the weights
are `w = X^T alpha` for the `m` training activations `X (m, D)`, so each Newton
step factors one `m x m` symmetric positive definite matrix built from the Gram
matrix `X X^T` (Cholesky), whatever the layer's width `D`, and a few steps
reach the optimum to float32 round-off. Trying the step sizes 1, 1/2, 1/4 and
1/8 keeps every step a descent step. The penalty is scaled by the mean squared norm of the
activations' spread, so the fit does not depend on their scale or offset.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from .._core import batching
from .._core import layers as _layers
from .._core import validate as V
from .._core.models import as_model
from .._core.types import HIGHEST, Array, ArrayLike

_LINE_SEARCH = 4  # step sizes 1, 1/2, 1/4, 1/8 tried per Newton step


class CAV(NamedTuple):
    """What `concept_activation_vector` returns.

    Attributes:
      vector: the unit CAV, shaped like one example's activation at the layer
        (e.g. `(h, w, C)`): the normal of the decision boundary, pointing from
        the random examples towards the concept.
      accuracy: `()` the classifier's accuracy on the held-out examples (on the
        training examples when none are held out).
      bias: `()` the classifier's intercept for the unit normal: an activation
        `a` is classified as the concept when `vector . a + bias > 0`.
    """

    vector: Array
    accuracy: Array
    bias: Array


def fit_logistic(pos: jax.Array, neg: jax.Array, reg: jax.Array, steps: int):
    """L2-regularised logistic regression of `pos` (label +1) against `neg` (-1).

    Minimises `mean(log(1 + exp(-y (w . a + b)))) + reg * s / 2 * |w|^2` with `s`
    the mean squared distance of the activations to their mean, by `steps`
    damped Newton steps on the dual coefficients. `pos (m1, D)`, `neg (m2, D)`; returns `(w (D,), b ())`.
    """
    X, y, mean, K, lam = _centred(pos, neg, reg)
    m = X.shape[0]

    def objective(alpha, b):
        f = jnp.matmul(K, alpha, precision=HIGHEST) + b
        penalty = jnp.dot(alpha, jnp.matmul(K, alpha, precision=HIGHEST), precision=HIGHEST)
        return jnp.mean(jax.nn.softplus(-y * f)) + 0.5 * lam * penalty

    def step(state, _):
        alpha, b = state
        f = jnp.matmul(K, alpha, precision=HIGHEST) + b
        p = jax.nn.sigmoid(y * f)
        g = -y * (1.0 - p) / m          # d loss / d f
        root = jnp.sqrt(p * (1.0 - p) / m)  # sqrt(d2 loss / d f2)
        d_alpha, d_b = _newton_step(K, lam, g, g + lam * alpha, root)
        ts = [0.5 ** k for k in range(_LINE_SEARCH)]
        tried = jnp.stack([objective(alpha + t * d_alpha, b + t * d_b) for t in ts])
        best = jnp.argmin(tried)
        t = jnp.where(tried[best] < objective(alpha, b), jnp.asarray(ts)[best], 0.0)
        return (alpha + t * d_alpha, b + t * d_b), None

    init = (jnp.zeros(m, jnp.float32), jnp.zeros((), jnp.float32))
    (alpha, b), _ = jax.lax.scan(step, init, None, length=steps)
    w = jnp.matmul(alpha, X, precision=HIGHEST)
    return w, b - jnp.dot(mean, w, precision=HIGHEST)


def _newton_step(K, lam, g, r, root):
    """The Newton step `(d_alpha, d_b)` of `fit_logistic`, by one Cholesky factorisation.

    With `S = diag(root^2)` the loss curvatures, the Newton equations (one factor `K`
    taken out) are `(S K + lam I) d_alpha + S 1 d_b = -r` and `1^T (g + S d_f) = 0`
    for the change of the scores `d_f = K d_alpha + d_b 1`. Writing
    `S d_f = root * v`, `v` solves the symmetric positive definite system
    `(lam I + R K R) v = R (lam d_b 1 - K r)` (`R = diag(root)`), affine in `d_b`,
    which the second equation then fixes; `d_alpha = -(r + root * v) / lam`.
    """
    m = K.shape[0]
    M = lam * jnp.eye(m) + root[:, None] * K * root[None, :]
    L = jax.lax.linalg.cholesky(M)
    rhs = jnp.stack([-root * jnp.matmul(K, r, precision=HIGHEST), lam * root], axis=1)
    half = jax.lax.linalg.triangular_solve(L, rhs, left_side=True, lower=True)
    v = jax.lax.linalg.triangular_solve(L, half, left_side=True, lower=True, transpose_a=True)
    denom = jnp.dot(root, v[:, 1], precision=HIGHEST)
    d_b = -(jnp.sum(g) + jnp.dot(root, v[:, 0], precision=HIGHEST)) / jnp.where(
        denom > 0, denom, 1.0)
    d_alpha = -(r + root * (v[:, 0] + d_b * v[:, 1])) / lam
    return d_alpha, d_b


def _centred(pos: jax.Array, neg: jax.Array, reg: jax.Array):
    """`(X - mean, labels, mean, Gram matrix, penalty)` of a fit.

    With an unpenalised intercept, centring the activations changes only the
    intercept (`w . a + b = w . (a - mean) + (b + w . mean)`), and takes their
    common offset out of the Gram matrix: its condition number, and with it the
    float32 round-off of the fit, drops by orders of magnitude on ReLU features.
    The penalty is `reg` times the mean squared distance to the mean.
    """
    X = jnp.concatenate([pos, neg]).astype(jnp.float32)
    y = jnp.concatenate([jnp.ones(pos.shape[0]), -jnp.ones(neg.shape[0])]).astype(jnp.float32)
    mean = jnp.mean(X, axis=0)
    X = X - mean
    K = jnp.matmul(X, X.T, precision=HIGHEST)
    scale = jnp.trace(K) / X.shape[0]
    return X, y, mean, K, reg * jnp.where(scale > 0, scale, 1.0)


def uniforms(key: jax.Array, rows: int, n: int) -> jax.Array:
    """`(rows, n)` uniform numbers; `jnp.argsort(u[i, :m])` is a random order of `range(m)`.

    All the draws of a program come from one `uniform` call: one threefry hash to
    compile, where one `jax.random.permutation` per order compiles several.
    """
    return jax.random.uniform(key, (rows, n))


def fit_ridge(pos: jax.Array, neg: jax.Array, reg: jax.Array):
    """Ridge regression of the labels +1 (`pos`) and -1 (`neg`) on the activations.

    Minimises `mean((y - w . a - b)^2) + reg * s * |w|^2` (`s` as in
    `fit_logistic`) in closed form: `w = Xc^T (Xc Xc^T + m reg s I)^{-1} yc` on the
    centred activations `Xc` and labels `yc`, one Cholesky solve.
    """
    Xc, y, mean, K, lam = _centred(pos, neg, reg)
    m = Xc.shape[0]
    coef = jax.scipy.linalg.solve(K + m * lam * jnp.eye(m), y - jnp.mean(y), assume_a="pos")
    w = jnp.matmul(coef, Xc, precision=HIGHEST)
    return w, jnp.mean(y) - jnp.dot(mean, w, precision=HIGHEST)


CLASSIFIERS = ("logistic", "ridge")


def fit_cav(pos: jax.Array, neg: jax.Array, order_pos: jax.Array, order_neg: jax.Array,
            reg: jax.Array, *, n_test: tuple, steps: int,
            classifier: str = "logistic") -> tuple[jax.Array, jax.Array, jax.Array]:
    """A unit CAV separating flat activations `pos (m1, D)` from `neg (m2, D)`.

    `classifier` is `"logistic"` (`fit_logistic`) or `"ridge"` (`fit_ridge`).
    `n_test = (t1, t2)` examples of each class are held out to measure the
    accuracy: the first ones in the random orders `order_pos (m1,)` and
    `order_neg (m2,)`; with none held out the accuracy is on the training
    examples. Returns `(unit vector (D,), accuracy (), bias ())`.
    """
    pos, neg = pos[order_pos], neg[order_neg]
    tp, tn = n_test
    if classifier == "ridge":
        w, b = fit_ridge(pos[tp:], neg[tn:], reg)
    else:
        w, b = fit_logistic(pos[tp:], neg[tn:], reg, steps)
    norm = jnp.sqrt(jnp.sum(w * w))
    safe = jnp.where(norm > 0, norm, 1.0)
    test_pos, test_neg = (pos[:tp], neg[:tn]) if tp and tn else (pos[tp:], neg[tn:])
    right = jnp.concatenate([
        jnp.matmul(test_pos, w, precision=HIGHEST) + b > 0,
        jnp.matmul(test_neg, w, precision=HIGHEST) + b <= 0,
    ])
    return w / safe, jnp.mean(right.astype(jnp.float32)), b / safe


def activations(model, x: jax.Array, layer: tuple, at: str, batch_size: int | None) -> jax.Array:
    """The activations at the layer's site for `x`, flattened to `(N, D)` (one forward each)."""
    def chunk(start, size):
        act = _layers.probe(model, jax.lax.dynamic_slice_in_dim(x, start, size), layer, at=at)[1]
        return act.reshape(size, -1)

    return batching.chunked_map(chunk, x.shape[0], batch_size)


def check_options(reg: Any, test_fraction: Any, steps: Any,
                  classifier: Any) -> tuple[float, float, int]:
    V.check_choice(classifier, "classifier", CLASSIFIERS)
    reg = V.check_float(reg, "regularization", minimum=0.0, open_min=True)
    test_fraction = V.check_float(test_fraction, "test_fraction", minimum=0.0, maximum=0.9)
    steps = V.check_int(steps, "steps", minimum=1, maximum=1000)
    return reg, test_fraction, steps


def held_out(n: int, test_fraction: float, name: str) -> int:
    """How many of `n` examples of one class are held out; at least one is trained on."""
    if n < 2:
        V.fail(name, "at least 2 examples (one CAV is fitted between two sets)", f"{n}")
    return min(int(test_fraction * n), n - 1)


def check_sets(model: Any, x_like: Any, layer: Any, at: str, names: tuple[str, ...], *sets):
    """Validates example sets of one per-example shape and the layer; returns
    `(model, sets as device arrays, layer key, activation shape)`."""
    _layers.check_site(at)
    model = as_model(model)
    arrays = [V.check_array(s, n) for s, n in zip(sets, names)]
    ref = tuple(V.shape_of(x_like)[1:]) if x_like is not None else tuple(arrays[0].shape[1:])
    bad = [f"{n} has examples of shape {tuple(a.shape[1:])}" for n, a in zip(names, arrays)
           if tuple(a.shape[1:]) != ref]
    if bad:
        V.fail(", ".join(names), f"examples of one shape {ref}", "; ".join(bad))
    parts = _layers.layer_parts(layer)
    shape = _layers.activation_shape(model, arrays[0], parts, at)
    if not isinstance(shape, jax.ShapeDtypeStruct):
        V.fail("layer", "a layer returning one array (a CAV lives in one activation space)",
               f"{layer!r} returning {jax.tree.structure(shape)}")
    return model, arrays, parts, shape


def concept_activation_vector(model: Any, concept_x: ArrayLike, random_x: ArrayLike, *,
                              layer: Any, key: Any, at: str = "output",
                              classifier: str = "logistic", regularization: float = 0.01,
                              test_fraction: float = 0.33, steps: int = 20,
                              batch_size: int | None = None) -> CAV:
    """The concept activation vector of `concept_x` against `random_x` at `layer`.

    The activations of both sets at the layer's output (or, with `at="input"`,
    its input) are separated by an L2-regularised logistic regression fitted on
    device (module docstring), or with `classifier="ridge"` by ridge regression
    on the labels +-1 (closed form, cheaper to compile); the CAV is the unit normal of its boundary,
    pointing towards the concept. `test_fraction` of each set (drawn with `key`)
    is held out to measure the accuracy, as Captum's default classifier does;
    a CAV with an accuracy near 0.5 does not describe the concept at this layer.
    One forward pass per example of the two sets.

    Args:
      model: a Linen (`from_linen`) or NNX model.
      concept_x: examples of the concept `(M, ...)`, shaped like the model's inputs.
      random_x: counterexamples `(M2, ...)` (random inputs, or another concept).
      layer: the layer (submodule path), as in `grad_cam`.
      key: a `jax.random.key`, for the held-out split.
      at: `"output"` or `"input"` (the first positional argument of its `__call__`).
      classifier: `"logistic"` (Kim et al.'s choice) or `"ridge"`.
      regularization: the L2 penalty, relative to the mean squared norm of the
        activations (so rescaling the activations does not change the CAV).
      test_fraction: the share of each set held out (in `[0, 0.9]`; 0 measures the
        accuracy on the training examples).
      steps: Newton steps of the logistic regression (it converges in fewer than
        20 on separable and overlapping sets alike).
      batch_size: examples per forward chunk (`None`: the library default).

    Returns:
      `CAV(vector, accuracy, bias)`.

    Raises:
      ValueError: an unknown layer (the message lists them), sets of other
        shapes or with fewer than 2 examples, or options out of range.

    References:
      Kim et al., "Interpretability Beyond Feature Attribution: Quantitative
      Testing with Concept Activation Vectors (TCAV)", ICML 2018.
    """
    model, (cx, rx), parts, shape = check_sets(model, None, layer, at, ("concept_x", "random_x"),
                                               concept_x, random_x)
    reg, test_fraction, steps = check_options(regularization, test_fraction, steps, classifier)
    n_test = (held_out(cx.shape[0], test_fraction, "concept_x"),
              held_out(rx.shape[0], test_fraction, "random_x"))
    key = V.check_key(key)
    vector, acc, bias = _cav(model, cx, rx, key, np.float32(reg), layer=parts, at=at,
                             n_test=n_test, steps=steps, classifier=classifier,
                             batch_size=V.check_batch_size(batch_size))
    return CAV(vector.reshape(shape.shape[1:]), acc, bias)


@functools.partial(jit, static_argnames=("layer", "at", "n_test", "steps", "classifier",
                                         "batch_size"))
def _cav(model, cx, rx, key, reg, *, layer, at, n_test, steps, classifier, batch_size):
    pos = activations(model, cx, layer, at, batch_size)
    neg = activations(model, rx, layer, at, batch_size)
    m1, m2 = pos.shape[0], neg.shape[0]
    u = uniforms(key, 2, max(m1, m2))
    return fit_cav(pos, neg, jnp.argsort(u[0, :m1]), jnp.argsort(u[1, :m2]), reg,
                   n_test=n_test, steps=steps, classifier=classifier)
