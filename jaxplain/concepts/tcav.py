"""TCAV: testing a class's sensitivity to a concept with concept activation vectors.

`tcav(model, x, target=k, layer=..., concept_x=..., random_x=..., key=...)`:

1. the activations of `concept_x` and of the pool `random_x` at the layer (one
   forward pass each);
2. `n_random` random sets `R_i` of `len(concept_x)` examples drawn from the pool
   with `key`, and CAVs (`fit.fit_in_gram`) of the concept against each; then
   CAVs of random positive sets against the same `R_i`: one random
   counterpart `R_0` for all (`test="student"` or `"welch"`: the pairing of
   Captum's tutorial and of the authors' `tcav` library; the `R_i` avoid `R_0`),
   or a fresh random set per run (`test="random_concepts"`);
3. the gradient of the target at the layer for every input (one forward and
   one backward pass to the layer), and its directional derivative along each
   CAV; a TCAV score is the fraction of inputs where it is positive;
4. a two-sided test of the concept's scores against the random ones
   (`stats.ttest_ind`, or `stats.prediction_test` for `"random_concepts"`).

Why two tests. With one random counterpart every random run shares `R_0`, and
every concept run shares the concept set: a CAV is mostly the difference of the
two sets' means, so each group's scores cluster around a value set by its one
positive set, and the two-sample t-test, which takes the runs as independent,
calls two random sets "different" far more often than 5% of the time.
`"random_concepts"` asks the question the test is meant to answer: is the
concept's score a plausible score of a random set? The random runs then have a
fresh positive set each, and the concept's mean score is tested against their
spread as one new draw (a prediction interval, `n - 1` degrees of freedom),
which is conservative. Measured on the hand-set bar detector of
tests/test_concepts.py over 50 keys (10 runs): a concept of plain noise images
was significant at p < 0.05 for 26 of 50 keys under the t-test (Student's or
Welch's) and for none against random concepts; the bar concept for 50 of 50
under the t-test and for 27 of 50 against random concepts (its power is lower
when random CAVs give scores near 0 or 1, as on this model whose gradients all
point one way).

Against Captum's `TCAV` on a PyTorch twin of the digits CNN (20 runs per concept,
benchmarks/results/tcav_reference.md): with a classifier fitting this module's
objective, Captum's scores agree with these within sampling error on 8 of 8
concepts; with Captum's default classifier (an `SGDClassifier` stopped far from its
optimum) on 5 of 8, its scores pulled towards 0.5 where these are near 0 or 1.

All of it is one jitted program: the fits are `vmap`ped, the p-value is
computed on device.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit, tuned
from .._core import layers as _layers
from .._core import registry
from .._core import batching
from .._core import validate as V
from .._core.targets import as_target
from .._core.types import HIGHEST, Array, ArrayLike
from .cav import activations, check_options, check_sets, held_out, uniforms
from .fit import fit_in_gram, gram
from .stats import prediction_test, ttest_ind


TESTS = ("student", "welch", "random_concepts")


class TCAVResult(NamedTuple):
    """What `tcav` returns (a pytree: it passes through `jax.jit` and `jax.vmap`).

    Attributes:
      score: `()` the TCAV score of the concept, the mean of `scores`.
      scores: `(n_random,)` the fraction of inputs whose target increases along
        the CAV of the concept against random set `i`.
      random_scores: `(n_random,)` the same for the CAVs of random positive sets
        against random set `i` (the random counterpart, or fresh sets with
        `test="random_concepts"`): what chance gives.
      p_value: `()` two-sided test of `scores` against `random_scores` (`test`);
        below 0.05 the concept matters to the target at this layer.
      accuracy: `(n_random,)` held-out accuracy of the concept's CAVs.
      random_accuracy: `(n_random,)` held-out accuracy of the random CAVs.
      cavs: `(n_random, ...)` the concept's unit CAVs, shaped like one activation.
      derivatives: `(N, n_random)` the directional derivative of each input's
        target along each of the concept's CAVs.
      n_evals: `(N,)` model evaluations per input (one forward and backward pass;
        the sets cost one forward pass per example, shared by the batch).
    """

    score: Array
    scores: Array
    random_scores: Array
    p_value: Array
    accuracy: Array
    random_accuracy: Array
    cavs: Array
    derivatives: Array
    n_evals: Array

    @property
    def significant(self) -> Array:
        """`p_value < 0.05`."""
        return self.p_value < 0.05


@registry.method("concepts", evals=lambda a: 1)
def tcav(model: Any, x: ArrayLike, *, target: Any, layer: Any, concept_x: ArrayLike,
         random_x: ArrayLike, key: Any, n_random: int = 10, test: str = "student",
         at: str = "output", classifier: str = "logistic", regularization: float = 0.01,
         test_fraction: float = 0.33, steps: int = 20,
         batch_size: int | None = None) -> TCAVResult:
    """TCAV: how often a concept's direction at a layer raises the target, and is it chance?

    For each of `n_random` random sets drawn from the pool `random_x` (each of
    `len(concept_x)` examples, without replacement), a CAV separates the
    concept's activations at `layer` from the random set's
    (`concept_activation_vector`), and the TCAV score is the fraction of the
    inputs `x` whose target has a positive directional derivative along it:
    `mean_x [grad_A f_target(x) . cav > 0]`. Random positive sets against the
    same random sets give the scores of chance, and a two-sided test compares
    the two (module docstring). Per input: one forward and one backward pass to
    the layer; the sets cost one forward pass per example.

    Args:
      model: a Linen (`from_linen`) or NNX model.
      x: the inputs whose class is tested `(N, ...)`, usually examples of the
        target class.
      target: which output (as in `saliency`): an int, one per input,
        `"predicted"` or a callable.
      layer: the layer (submodule path) where the concept is read.
      concept_x: examples of the concept `(M, ...)`, shaped like `x`.
      random_x: the pool of random examples `(P, ...)`, `P >= 2 M`.
      key: a `jax.random.key`: draws the random sets and the held-out splits.
      n_random: random runs (at least 2; Kim et al. use 10 or more).
      test: `"student"` (a two-sample t-test of the scores against those of one
        random counterpart, SciPy's `ttest_ind` default as in Captum's tutorial
        and the authors' library), `"welch"` (the same, unequal variances) or
        `"random_concepts"` (the concept's mean score against the scores of
        fresh random sets, as one new draw; module docstring).
      at: `"output"` or `"input"` (the first positional argument of its `__call__`).
      classifier, regularization, test_fraction, steps: the CAV classifier, as in
        `concept_activation_vector`.
      batch_size: examples per chunk (`None`: the library default).

    Returns:
      `TCAVResult` with the scores, the p-value, the CAVs' accuracies, the CAVs
      and the directional derivatives.

    Raises:
      ValueError: an unknown layer (the message lists them), sets whose examples
        are not shaped like `x`, a pool smaller than `2 * len(concept_x)`,
        `n_random < 2`, or options out of range.

    References:
      Kim et al., "Interpretability Beyond Feature Attribution: Quantitative
      Testing with Concept Activation Vectors (TCAV)", ICML 2018.
    """
    model, (x, cx, rx), parts, _ = check_sets(
        model, x, layer, at, ("x", "concept_x", "random_x"), x, concept_x, random_x)
    n_random = V.check_int(n_random, "n_random", minimum=2, maximum=10_000)
    V.check_choice(test, "test", TESTS)
    reg, test_fraction, steps = check_options(regularization, test_fraction, steps, classifier)
    m, pool = cx.shape[0], rx.shape[0]
    if pool < 2 * m:
        V.fail("random_x", f"a pool of at least 2 * len(concept_x) = {2 * m} examples (two "
               f"disjoint random sets of {m})", f"{pool} examples")
    t = held_out(m, test_fraction, "concept_x")
    return _tcav(model, x, as_target(target, model, x), cx, rx, V.check_key(key), np.float32(reg),
                 layer=parts, at=at, n_random=n_random, test=test, n_test=t, steps=steps,
                 classifier=classifier, batch_size=V.check_batch_size(batch_size))


def layer_gradients(model, target, x: jax.Array, layer: tuple, at: str, batch_size):
    """The target's gradient at the layer's site for every input, flattened to `(N, D)`:
    one forward and one backward pass (to the layer) through a zero probe."""
    def chunk(start, size):
        xs = jax.lax.dynamic_slice_in_dim(x, start, size)
        t = target.take(start + jnp.arange(size, dtype=jnp.int32))
        zeros = _layers.zeros_like_shape(_layers.activation_shape(model, xs, layer, at))
        probed = tuned(lambda d: _layers.probe(model, xs, layer, d, at=at), "grad")
        outputs, vjp, _ = jax.vjp(probed, zeros, has_aux=True)
        bound = t.bind(jax.lax.stop_gradient(outputs))
        (g,) = vjp(jax.grad(lambda o: jnp.sum(bound.select(o)))(outputs))
        return g.reshape(size, -1)

    return batching.chunked_map(chunk, x.shape[0], batch_size)


def random_sets(n_pool: int, u: jax.Array, m: int, test: str):
    """`(positives, negatives)` `(R, M)` indices into the pool for the random runs, from
    uniforms `u (R + 1, P)`.

    The negatives `R_i` are each run's; the positives are one counterpart `R_0`
    (drawn first, the `R_i` from the rest of the pool) or, for
    `"random_concepts"`, a fresh set per run disjoint from that run's `R_i`.
    """
    r = u.shape[0] - 1
    if test == "random_concepts":
        order = jnp.argsort(u[1:], axis=1)
        return order[:, m:2 * m], order[:, :m]
    first = jnp.argsort(u[0])
    rest = first[m:]
    negatives = rest[jnp.argsort(u[1:, :n_pool - m], axis=1)[:, :m]]
    return jnp.broadcast_to(first[:m], (r, m)), negatives


@functools.partial(jit, static_argnames=("layer", "at", "n_random", "test", "n_test", "steps",
                                         "classifier", "batch_size"))
def _tcav(model, x, target, cx, rx, key, reg, *, layer, at, n_random, test, n_test, steps,
          classifier, batch_size) -> TCAVResult:
    m, n_pool, r = cx.shape[0], rx.shape[0], n_random
    acts = jnp.concatenate([activations(model, cx, layer, at, batch_size),
                            activations(model, rx, layer, at, batch_size)])  # (M + P, D)
    A, G, offset = gram(acts)
    u = uniforms(key, r + 1 + 4 * r, n_pool)  # the random sets, then the held-out splits
    rand_pos, negatives = random_sets(n_pool, u[:r + 1], m, test)
    orders = jnp.argsort(u[r + 1:, :m], axis=1).reshape(2, 2 * r, m)
    concept = jnp.broadcast_to(jnp.arange(m), (r, m))
    positives = jnp.concatenate([concept, m + rand_pos])           # indices into acts
    negatives = m + jnp.concatenate([negatives, negatives])
    fit = functools.partial(fit_in_gram, G, offset, reg=reg, n_test=(n_test, n_test),
                            steps=steps, classifier=classifier)
    coef, _, acc = jax.vmap(lambda p, q, op, oq: fit(p[op], q[oq]))(
        positives, negatives, orders[0], orders[1])
    cavs = jnp.matmul(coef, A, precision=HIGHEST)                    # (2R, D)
    grads = layer_gradients(model, target, x, layer, at, batch_size)  # (N, D)
    derivs = jnp.matmul(grads, cavs.T, precision=HIGHEST)            # (N, 2R)
    scores = jnp.mean((derivs > 0).astype(jnp.float32), axis=0)
    if test == "random_concepts":
        _, p = prediction_test(jnp.mean(scores[:r]), scores[r:])
    else:
        _, p = ttest_ind(scores[:r], scores[r:], equal_var=test == "student")
    act_shape = _layers.activation_shape(model, x[:1], layer, at).shape[1:]
    return TCAVResult(
        score=jnp.mean(scores[:r]), scores=scores[:r], random_scores=scores[r:], p_value=p,
        accuracy=acc[:r], random_accuracy=acc[r:], cavs=cavs[:r].reshape((r,) + act_shape),
        derivatives=derivs[:, :r], n_evals=jnp.ones((x.shape[0],), jnp.int32))
