"""Sanity checks: model parameter randomisation, random logit, SSIM and rank correlation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats
from skimage.metrics import structural_similarity

import jaxplain as jx
from jaxplain.metrics import base as B
from jaxplain import testing
from jaxplain.metrics.sanity import layer_groups


@pytest.fixture(scope="module")
def trained():
    """A tiny CNN trained for a few seconds on 8x8 digits (accuracy well above chance)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = jnp.asarray(digits.images[:256, :, :, None] / 16.0, jnp.float32)
    y = jnp.asarray(digits.target[:256])
    module = testing.tiny_cnn(n_classes=10, features=(4, 8))
    params = module.init(jax.random.key(0), x[:1])
    opt = optax.adam(3e-2)

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(module.apply(p, x), y).mean()
        )(p)
        u, s = opt.update(g, s)
        return optax.apply_updates(p, u), s, loss

    state = opt.init(params)
    for _ in range(40):
        params, state, _ = step(params, state)
    acc = float((module.apply(params, x).argmax(-1) == y).mean())
    assert acc > 0.5, acc
    return jx.from_linen(module, params), x[:4]


def explain_saliency(m, x, target):
    return jx.saliency(m, x, target=target)


def edges(m, x, target=None):
    """An 'explanation' that ignores the model: the image's gradient magnitude."""
    del m, target
    gy = jnp.diff(x, axis=1, append=x[:, -1:])
    gx = jnp.diff(x, axis=2, append=x[:, :, -1:])
    return jnp.sqrt(gx**2 + gy**2)


def test_ssim_matches_skimage():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(3, 12, 10)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, size=a.shape), 0, 1).astype(np.float32)
    ref = [structural_similarity(u, v, data_range=1.0) for u, v in zip(a, b)]
    np.testing.assert_allclose(jx.ssim(a, b, data_range=1.0), ref, rtol=1e-4)
    ref5 = [
        structural_similarity(
            u, v, data_range=float(max(u.max(), v.max()) - min(u.min(), v.min())), win_size=5
        )
        for u, v in zip(a, b)
    ]
    np.testing.assert_allclose(jx.ssim(a, b, win_size=5), ref5, rtol=1e-4)
    np.testing.assert_allclose(jx.ssim(a, a), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="b: expected the shape of a"):
        jx.ssim(a, b[:, :5])
    with pytest.raises(ValueError, match="odd"):
        jx.ssim(a, b, win_size=4)


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, size=(4, 30)).astype(np.float32)
    b = (a + rng.integers(0, 3, size=a.shape)).astype(np.float32)
    ref = [scipy.stats.spearmanr(u, v).statistic for u, v in zip(a, b)]
    np.testing.assert_allclose(B.spearman(jnp.asarray(a), jnp.asarray(b)), ref, rtol=1e-5)


def test_layer_groups_top_first():
    m = testing.tiny_cnn()
    x = testing.random_images(0, n=1)
    v = m.init(jax.random.key(0), x)
    names = [n for n, _ in layer_groups(jx.from_linen(m, v), x)]
    assert names == ["head", "conv1", "conv0"]
    nnx_model = jx.from_nnx(testing.tiny_cnn_nnx(v))
    names = [n for n, _ in layer_groups(nnx_model, x)]
    assert names == ["head", "convs/1", "convs/0"]
    r = jx.model_parameter_randomisation(nnx_model, x, explain=edges, target=0, key=0)
    assert r.layers == ("head", "convs/1", "convs/0")
    np.testing.assert_allclose(r.spearman, 1.0, atol=1e-5)


def test_randomisation_separates_model_explanations_from_edge_detectors(trained):
    model, x = trained
    key = jax.random.key(0)
    res = jx.model_parameter_randomisation(
        model, x, explain=explain_saliency, target="predicted", key=key
    )
    assert res.layers == ("head", "conv1", "conv0")
    assert res.spearman.shape == (3, 4) and res.ssim.shape == (3, 4)
    # saliency depends on the weights: similarity drops once the cascade is complete
    assert float(res.spearman[-1].mean()) < 0.6
    assert float(res.ssim[-1].mean()) < 0.6
    # an edge detector ignores the model: identical maps at every stage (the check fails)
    e = jx.model_parameter_randomisation(model, x, explain=edges, target="predicted", key=key)
    np.testing.assert_allclose(e.spearman, 1.0, atol=1e-5)
    np.testing.assert_allclose(e.ssim, 1.0, atol=1e-5)
    # weights change through Model.replace: the cascade reuses one compiled program
    x2, k2 = x * 0.5, jax.random.key(1)
    with testing.count_compiles() as c:
        again = jx.model_parameter_randomisation(
            model, x2, explain=explain_saliency, target="predicted", key=k2, cascade=False
        )
    assert c["n"] == 0
    assert again.spearman.shape == (3, 4)
    same = jx.model_parameter_randomisation(
        model, x, explain=explain_saliency, target="predicted", key=key, layers=["head", "conv1"]
    )
    np.testing.assert_allclose(same.spearman, res.spearman[:2], rtol=1e-5, atol=1e-6)


def test_random_logit(trained):
    model, x = trained
    key = jax.random.key(0)
    s = jx.random_logit(model, x, explain=explain_saliency, target="predicted", key=key)
    assert s.shape == (4,) and float(s.mean()) < 0.9
    np.testing.assert_allclose(
        jx.random_logit(model, x, explain=explain_saliency, target="predicted", key=key), s
    )
    np.testing.assert_allclose(
        jx.random_logit(model, x, explain=edges, target="predicted", key=key), 1.0, atol=1e-5
    )


def test_sanity_errors(trained):
    model, x = trained
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="explain: expected a callable taking target="):
        jx.random_logit(model, x, explain=lambda m, z: z, target=0, key=key)
    with pytest.raises(ValueError, match="layers: expected names among"):
        jx.model_parameter_randomisation(
            model, x, explain=edges, target=0, key=key, layers=["dense"]
        )
    with pytest.raises(TypeError, match="model: expected a model with weights"):
        jx.model_parameter_randomisation(
            lambda z: z.sum((1, 2, 3)), x, explain=edges, target=None, key=key
        )
    with pytest.raises(ValueError, match="explain: calling explain"):
        jx.model_parameter_randomisation(
            model, x, explain=lambda m, z: z[5, 5, 5, 5, 5], target=0, key=key
        )
    with pytest.raises(ValueError, match="target"):
        jx.random_logit(model, x, explain=edges, target=lambda o: o[:, 0], key=key)
