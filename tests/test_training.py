"""jaxplain.training: attribution penalties against closed forms on linear models, the
optax step against a hand-written one, bad input, and the prior at work on a cheap
version of examples/spurious_prior.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxplain as jx
from jaxplain import training as T

W = jnp.array([[1.0, 0.5, 0.0], [-2.0, 0.3, 1.0], [0.2, -0.7, 0.4]])  # 3 inputs, 3 classes
B = jnp.array([0.1, -0.2, 0.3])
X = jax.random.normal(jax.random.key(0), (5, 3))
Y = jnp.array([0, 1, 2, 0, 1])
MASK = jnp.array([0.0, 1.0, 1.0])


def model():
    return jx.testing.linear_model(W, B)


def test_label_saliency_penalty_is_the_squared_masked_weights_of_the_labels():
    # for a linear model the input gradient of logit y is W[:, y]
    pen = T.attribution_penalty("input_gradients", MASK, target="label")
    expect = np.mean([np.sum(np.asarray(MASK) * np.asarray(W[:, y]) ** 2) for y in Y])
    np.testing.assert_allclose(float(pen(model(), X, Y)), expect, rtol=1e-6)
    p1 = T.attribution_penalty("saliency", MASK, target="label", power=1)
    expect1 = np.mean([np.sum(np.asarray(MASK) * np.abs(np.asarray(W[:, y]))) for y in Y])
    np.testing.assert_allclose(float(p1(model(), X, Y)), expect1, rtol=1e-6)


def test_ross_penalty_is_the_masked_gradient_of_the_summed_log_probabilities():
    # d/dx sum_k log p_k = sum_k W[:, k] - K * W p(x)
    pen = T.attribution_penalty("input_gradients", MASK)
    p = np.asarray(jax.nn.softmax(X @ W + B))
    g = np.asarray(W).sum(1)[None] - 3 * p @ np.asarray(W).T
    expect = np.mean(np.sum(np.asarray(MASK) * g ** 2, axis=1))
    np.testing.assert_allclose(float(pen(model(), X)), expect, rtol=1e-5)


def test_gradient_x_input_ig_and_expected_gradients_penalties_on_a_linear_model():
    gxi = np.asarray(X) * np.asarray(W[:, Y]).T  # (5, 3): x_i W[i, y]
    expect = np.mean(np.sum(np.asarray(MASK) * gxi ** 2, axis=1))
    for method, kw in (("gradient_x_input", {}), ("integrated_gradients", {"steps": 2})):
        pen = T.attribution_penalty(method, MASK, target="label", **kw)
        np.testing.assert_allclose(float(pen(model(), X, Y)), expect, rtol=1e-5)
    # expected gradients with one reference r: W[:, y] * (x - r) exactly
    r = jnp.full((1, 3), 0.5)
    pen = T.attribution_penalty("expected_gradients", MASK, target="label", references=r,
                                n_samples=2)
    eg = (np.asarray(X) - 0.5) * np.asarray(W[:, Y]).T
    np.testing.assert_allclose(float(pen(model(), X, Y, key=jax.random.key(1))),
                               np.mean(np.sum(np.asarray(MASK) * eg ** 2, axis=1)), rtol=1e-5)


def test_mask_over_the_batch_and_attribution_mass():
    per_example = jnp.stack([MASK, 1 - MASK, MASK, MASK, 1 - MASK])
    pen = T.attribution_penalty("saliency", per_example, target="label")
    w2 = np.asarray(W[:, Y]).T ** 2
    np.testing.assert_allclose(float(pen(model(), X, Y)),
                               np.mean(np.sum(np.asarray(per_example) * w2, 1)), rtol=1e-6)
    v = jnp.array([[1.0, -1.0, 2.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(np.asarray(T.attribution_mass(v, MASK)), [0.75, 0.0])


def test_train_step_is_sgd_on_cross_entropy_plus_lam_times_the_penalty():
    """One SGD step: the penalty's weight gradient is 2 * mask_i * W[i, k] * #{y = k} / N
    (double backprop through the saliency map), added to the cross-entropy's."""
    lam, lr = 0.5, 0.1
    pen = T.attribution_penalty("saliency", MASK, target="label")
    step = T.train_step(optax.sgd(lr), pen, lam)
    m = model()
    new, _, logs = step(m, optax.sgd(lr).init(m.params), X, Y)
    ce_grad = jax.grad(lambda p: T.cross_entropy(m.replace(p), X, Y))(m.params)[0]
    counts = np.bincount(np.asarray(Y), minlength=3)
    pen_grad = 2 * np.asarray(MASK)[:, None] * np.asarray(W) * counts[None] / len(Y)
    np.testing.assert_allclose(np.asarray(new.params[0]),
                               np.asarray(W) - lr * (np.asarray(ce_grad) + lam * pen_grad),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(logs["loss"]),
                               float(logs["cross_entropy"]) + lam * float(pen(m, X, Y)), rtol=1e-6)


def test_train_step_compiles_once_for_new_weights():
    pen = T.attribution_penalty("saliency", MASK, target="label")
    opt = optax.adam(0.1)
    step = T.train_step(opt, pen, 1.0)
    m = model()
    s = opt.init(m.params)
    m, s, _ = step(m, s, X, Y)
    with jx.testing.count_compiles() as c:
        for _ in range(3):
            m, s, _ = step(m, s, X, Y)
    assert c["n"] == 0


@pytest.mark.parametrize("call, exc, name", [
    (lambda: T.attribution_penalty("occlusion", MASK), ValueError, "method"),
    (lambda: T.attribution_penalty(jx.lime, MASK), ValueError, "method"),
    (lambda: T.attribution_penalty(3, MASK), TypeError, "method"),
    (lambda: T.attribution_penalty("saliency"), TypeError, "mask"),
    (lambda: T.attribution_penalty("saliency", -MASK - 1), ValueError, "mask"),
    (lambda: T.attribution_penalty("saliency", MASK, power=3), ValueError, "power"),
    (lambda: T.attribution_penalty("saliency", MASK, target="logits"), ValueError, "target"),
    (lambda: T.attribution_penalty("saliency", MASK, steps=4), TypeError, "steps"),
    (lambda: T.attribution_penalty("saliency", MASK, references=X), TypeError, "references"),
    (lambda: T.train_step(optax.sgd(0.1), T.attribution_penalty("saliency", MASK), -1.0),
     ValueError, "lam"),
    (lambda: T.train_step(optax.sgd(0.1), T.attribution_penalty("saliency", MASK), "big"),
     TypeError, "lam"),
    (lambda: T.train_step(optax.sgd(0.1), None, 1.0), ValueError, "lam"),
    (lambda: T.train_step("sgd"), TypeError, "optimizer"),
])
def test_bad_factory_arguments_name_the_argument(call, exc, name):
    with pytest.raises(exc, match=f"^{name}:"):
        call()


@pytest.mark.parametrize("pen, args, kw, name", [
    (T.attribution_penalty("saliency", jnp.ones(4)), (X, Y), {}, "mask"),
    (T.attribution_penalty("saliency", MASK, target="label"), (X,), {}, "y"),
    (T.attribution_penalty("saliency", MASK, target="label"), (X, Y[:2]), {}, "y"),
    (T.attribution_penalty("smoothgrad", MASK, target="label"), (X, Y), {}, "key"),
])
def test_bad_call_arguments_raise_before_any_compile(pen, args, kw, name):
    step = T.train_step(optax.sgd(0.1), pen, 1.0)
    m = model()
    with jx.testing.count_compiles() as c:
        with pytest.raises((ValueError, TypeError), match=f"^{name}:"):
            pen(m, *args, **kw)
        with pytest.raises((ValueError, TypeError), match=f"^{name}:"):
            step(m, optax.sgd(0.1).init(m.params), *(args if len(args) == 2 else (X, None)), **kw)
    assert c["n"] == 0


def _example():
    path = Path(__file__).resolve().parents[1] / "examples" / "spurious_prior.py"
    spec = importlib.util.spec_from_file_location("spurious_prior", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("spurious_prior", mod)  # flax's dataclasses look the module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_the_prior_keeps_a_logistic_model_off_the_spurious_mark():
    """The example's data, 512 training images, logistic regression, 30 Adam steps.
    Measured: plain model 11.9% of its gradient x input mass on the mark (4 of 64
    pixels) and 0.735 clean test accuracy; with the input-gradient prior (lam = 1)
    0.3% and 0.933."""
    ex = _example()
    x, y, x_clean, _, y_test = ex.dataset()
    x, y = jnp.asarray(x[:512].reshape(512, -1)), jnp.asarray(y[:512])
    mask = ex.mark_mask().reshape(-1)
    out = {}
    for lam in (0.0, 1.0):
        m = jx.testing.linear_model(jnp.zeros((64, 10)), jnp.zeros(10))
        pen = T.attribution_penalty("input_gradients", mask, target="label") if lam else None
        opt = optax.adam(0.1)
        step, s = T.train_step(opt, pen, lam), opt.init(m.params)
        for _ in range(30):
            m, s, _ = step(m, s, x, y)
        mass = T.attribution_mass(jx.gradient_x_input(m, x, target=y).values, mask).mean()
        acc = np.mean(np.argmax(np.asarray(m(jnp.asarray(x_clean.reshape(len(x_clean), -1)))), -1)
                      == y_test)
        out[lam] = float(mass), float(acc)
    assert out[0.0][0] > 0.08 and out[1.0][0] < 0.02
    assert out[0.0][1] < 0.85 and out[1.0][1] > 0.88


class _NNXLinear(nnx.Module):
    def __init__(self, rngs):
        self.l = nnx.Linear(3, 3, rngs=rngs)

    def __call__(self, x):
        return self.l(x)


def _adapted(kind):
    """A linear layer through the Linen or the NNX adapter: (model, kernel of its params)."""
    if kind == "linen":
        net = nn.Dense(3)
        m = jx.from_linen(net, net.init(jax.random.key(2), X))
        return m, lambda p: p["params"]["kernel"]
    m = jx.from_nnx(_NNXLinear(nnx.Rngs(2)))
    return m, lambda p: p["l"]["kernel"][...]


@pytest.mark.parametrize("kind", [pytest.param("linen", marks=pytest.mark.slow), "nnx"])
def test_train_step_through_the_adapters_matches_the_closed_form(kind):
    """Integrated gradients (zero baseline) of a linear layer are x_i W[i, y]; the
    penalty's kernel gradient is 2/N sum_{n: y_n = k} mask_i x_ni^2 W[i, k]."""
    lam, lr = 0.5, 0.1
    m, kernel = _adapted(kind)
    w = np.asarray(kernel(m.params))
    pen = T.attribution_penalty("integrated_gradients", MASK, target="label", steps=2)
    xs, ys = np.asarray(X), np.asarray(Y)
    expect = np.mean(np.sum(np.asarray(MASK) * (xs * w[:, ys].T) ** 2, axis=1))
    np.testing.assert_allclose(float(pen(m, X, Y)), expect, rtol=1e-5)
    new, _, _ = T.train_step(optax.sgd(lr), pen, lam)(m, optax.sgd(lr).init(m.params), X, Y)
    ce = jax.grad(lambda p: T.cross_entropy(m.replace(p), X, Y))(m.params)
    onehot = np.eye(3)[ys]  # (N, classes)
    pen_grad = 2 / len(ys) * np.asarray(MASK)[:, None] * ((xs ** 2).T @ onehot) * w
    np.testing.assert_allclose(np.asarray(kernel(new.params)),
                               w - lr * (np.asarray(kernel(ce)) + lam * pen_grad),
                               rtol=1e-5, atol=1e-6)


def test_method_settings_reach_the_method():
    """An IG baseline array: attributions W[:, y] * (x - b) on a linear model."""
    b = jnp.array([0.5, -1.0, 0.0])
    pen = T.attribution_penalty("integrated_gradients", MASK, target="label", steps=2, baseline=b)
    ig = (np.asarray(X) - np.asarray(b)) * np.asarray(W[:, Y]).T
    np.testing.assert_allclose(float(pen(model(), X, Y)),
                               np.mean(np.sum(np.asarray(MASK) * ig ** 2, axis=1)), rtol=1e-5)
