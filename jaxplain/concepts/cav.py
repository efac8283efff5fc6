"""Concept activation vectors: a linear classifier at a layer, fitted on device.

A CAV is the unit normal of the boundary that an L2-regularised logistic
regression (or, on request, a ridge regression) draws between the activations
of concept examples and those of random examples at one layer (Kim et al., ICML
2018). The classifiers work in the dual, from the Gram matrix of the examples'
activations (`fit.py`), so their cost does not grow with the layer's width
beyond the one Gram matrix.
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
from .fit import CLASSIFIERS, fit_in_gram, gram


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


def uniforms(key: jax.Array, rows: int, n: int) -> jax.Array:
    """`(rows, n)` uniform numbers; `jnp.argsort(u[i, :m])` is a random order of `range(m)`.

    All the draws of a program come from one `uniform` call: one threefry hash to
    compile, where one `jax.random.permutation` per order compiles several.
    """
    return jax.random.uniform(key, (rows, n))


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
    device (`jaxplain.concepts.fit`), or with `classifier="ridge"` by ridge
    regression on the labels +-1 (closed form, cheaper to compile); the CAV is
    the unit normal of its boundary, pointing towards the concept. `test_fraction` of each set (drawn with `key`)
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
      regularization: the L2 penalty, relative to the mean squared distance of
        the activations to their mean (so rescaling or shifting the activations
        does not change the CAV).
      test_fraction: the share of each set held out (in `[0, 0.9]`; 0 measures the
        accuracy on the training examples).
      steps: Newton steps of the logistic regression (it converges in fewer than
        10 on separable and overlapping sets alike).
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
    acts = jnp.concatenate([activations(model, cx, layer, at, batch_size),
                            activations(model, rx, layer, at, batch_size)])
    A, G, offset = gram(acts)
    m1, m2 = cx.shape[0], rx.shape[0]
    u = uniforms(key, 2, max(m1, m2))
    pos, neg = jnp.argsort(u[0, :m1]), m1 + jnp.argsort(u[1, :m2])
    coef, bias, acc = fit_in_gram(G, offset, pos, neg, reg, n_test=n_test, steps=steps,
                                  classifier=classifier)
    return jnp.matmul(coef, A, precision=HIGHEST), acc, bias
