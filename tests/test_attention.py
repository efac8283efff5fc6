"""Attention capture, rollout, gradient-weighted rollout, token Grad-CAM and patches, by value.

References are NumPy computations from the captured matrices (rollout) or from an
independent computation of the weights and their gradients (hand-written softmax
models whose attention is an explicit argument), never from the code under test.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jx
from jaxplain.app.vit import ViT, nnx_from_linen

N, S = 3, 8  # three 8x8 RGB images: 4 patches of 4x4 and a class token


def numpy_init(init, *args, seed=0, scale=0.5):
    """Variables shaped by `init` (traced, not run) drawn by NumPy: random initialisers
    would compile a program each, which costs more than these tests."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(init, jax.random.key(0), *args)
    return jax.tree.map(lambda v: (scale * rng.normal(size=v.shape)).astype(np.float32), shapes)


@pytest.fixture(scope="module")
def vit():
    module = ViT(patch=4, dim=8, depth=2, heads=2, mlp=8, n_classes=3)
    x = np.asarray(jx.testing.random_images(0, n=N, size=S))
    variables = numpy_init(module.init, x[:1])
    linen = jx.from_linen(module, variables)
    return dict(x=x, linen=linen, nnx=jx.from_nnx(nnx_from_linen(module, variables, (S, S, 3))))


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _rollout(ws, fuse=np.mean):
    r = np.eye(ws[0].shape[-1])
    for w in ws:
        a = fuse(np.asarray(w, np.float64), axis=1) + np.eye(w.shape[-1])
        r = (a / a.sum(-1, keepdims=True)) @ r
    return r


# ---- capture ---------------------------------------------------------------------------------


def test_captured_linen_and_nnx_weights_are_softmax_qk_over_sqrt_d():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(2, 5, 4)).astype(np.float32)  # 2 sequences of 5 tokens of width 4
    mha = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=6)
    variables = numpy_init(mha.init, t, seed=1)
    p = jax.tree.map(np.asarray, variables["params"])

    def proj(name):
        return np.einsum("ntd,dhk->nthk", t, p[name]["kernel"]) + p[name]["bias"]

    q, k = proj("query"), proj("key")
    want = _softmax(np.einsum("nqhd,nkhd->nhqk", q, k) / np.sqrt(3))
    _, got = jx.capture_attention(jx.from_linen(mha, variables), t)
    assert list(got) == ["attention0"]  # a bare module: no block path to name it after
    np.testing.assert_allclose(got["attention0"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(got["attention0"], -1), 1.0, rtol=1e-6)

    mnx = nnx.eval_shape(lambda: nnx.MultiHeadAttention(2, 4, qkv_features=6, decode=False,
                                                         rngs=nnx.Rngs(2)))
    for name in ("query", "key", "value", "out"):  # the Linen weights, numbers only
        for k, v in p[name].items():
            getattr(getattr(mnx, name), k).set_value(jnp.asarray(v) * 0.5)
    qn = np.einsum("ntd,dhk->nthk", t, mnx.query.kernel[...]) + mnx.query.bias[...]
    kn = np.einsum("ntd,dhk->nthk", t, mnx.key.kernel[...]) + mnx.key.bias[...]
    _, got = jx.capture_attention(mnx, t)
    np.testing.assert_allclose(got["attention0"],
                               _softmax(np.einsum("nqhd,nkhd->nhqk", qn, kn) / np.sqrt(3)),
                               rtol=1e-5, atol=1e-6)


def test_linen_layers_are_named_after_their_modules_and_nnx_twin_gives_the_same_weights(vit):
    x = vit["x"]
    assert jx.attention_layers(vit["linen"], x) == ["block0/attn", "block1/attn"]
    assert jx.attention_layers(vit["nnx"], x) == ["attention0", "attention1"]
    a = jx.attention_maps(vit["linen"], x).values
    b = jx.attention_maps(vit["nnx"], x).values
    assert a.shape == (N, 2, 2, 5, 5)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.sum(a, -1), 1.0, rtol=1e-5)


def test_a_model_without_attention_is_refused_before_compiling():
    cnn = jx.testing.tiny_cnn()
    x = jx.testing.random_images(0, n=2)
    model = jx.from_linen(cnn, numpy_init(cnn.init, x))
    with jx.testing.count_compiles() as c:
        for method in (jx.attention_maps, jx.attention_rollout):
            with pytest.raises(ValueError, match=r"model: .*TinyCNN.* has no attention"):
                method(model, x)
        with pytest.raises(ValueError, match="has no attention"):
            jx.grad_attention_rollout(model, x, target=0)
    assert c["n"] == 0


# ---- rollout ---------------------------------------------------------------------------------


def test_rollout_equals_a_numpy_rollout_of_the_captured_matrices(vit):
    model, x = vit["linen"], vit["x"]
    _, ws = jx.capture_attention(model, x)
    ws = list(ws.values())
    full = np.asarray(jx.attention_rollout(model, x, token=None).values)
    want = np.stack([_rollout([w[i:i + 1] for w in ws])[0] for i in range(N)])
    np.testing.assert_allclose(full, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full.sum(-1), 1.0, rtol=1e-5)  # rows stay distributions
    grid = want[:, 0, 1:].reshape(N, 2, 2)  # the class token's row over the patches
    image = np.asarray(jx.attention_rollout(model, x).values)  # each pixel: its patch's value
    np.testing.assert_allclose(image, np.repeat(np.repeat(grid, 4, 1), 4, 2), rtol=1e-5,
                               atol=1e-6)
    top = np.asarray(jx.attention_rollout(model, x, token=None, head_fusion="max").values)
    np.testing.assert_allclose(top, np.stack([_rollout([w[i:i + 1] for w in ws], np.max)[0]
                                              for i in range(N)]), rtol=1e-5, atol=1e-6)


def _identity_attention(x):
    t = x.reshape(x.shape[0], 4, -1)  # 4 tokens
    eye = jnp.eye(4, dtype=bool)
    for _ in range(3):
        scores = jnp.where(eye, t @ t.swapaxes(1, 2), -1e30)
        t = t + jax.nn.softmax(scores, axis=-1) @ t
    return jnp.sum(t, axis=(1, 2))[:, None]


def test_rollout_of_identity_attention_is_the_identity():
    x = jx.testing.random_images(1, n=2, size=4)
    maps = np.asarray(jx.attention_maps(_identity_attention, x).values)
    assert maps.shape == (2, 3, 1, 4, 4)
    np.testing.assert_array_equal(maps, np.broadcast_to(np.eye(4), maps.shape))
    for residual in (True, False):
        r = jx.attention_rollout(_identity_attention, x, token=None, residual=residual).values
        np.testing.assert_array_equal(np.asarray(r), np.broadcast_to(np.eye(4), (2, 4, 4)))


def _explicit_attention(params, x, deltas):
    """`jaxplain.testing.tiny_attention`'s forward pass with its attention as an explicit
    quantity: `deltas[l]` added to layer `l`'s weights (gradients without the probe)."""
    embed, layers, head = params
    n = x.shape[0]
    t = x.reshape(n, 2, 2, 2, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, 4, 12) @ embed
    weights = []
    for (wq, wk, wv), d in zip(layers, deltas):
        a = jax.nn.softmax((t @ wq) @ (t @ wk).swapaxes(1, 2) / 2.0, axis=-1)
        weights.append(a)
        t = t + (a + d) @ (t @ wv)
    return jnp.mean(t, axis=1) @ head, weights


def test_grad_rollout_equals_the_formula_on_independently_computed_gradients():
    model = jx.testing.tiny_attention(key=3, dim=4, depth=2, patch=2)
    x = jx.testing.random_images(2, n=2, size=4)
    target = np.array([2, 0])
    zeros = [jnp.zeros((2, 4, 4))] * 2

    @jax.jit
    def reference(params, z):
        def score(d):
            out, weights = _explicit_attention(params, z, d)
            return jnp.sum(out[jnp.arange(2), target]), weights

        return jax.grad(score, has_aux=True)(zeros)

    gs, ws = reference(model.params, x)
    r = np.broadcast_to(np.eye(4), (2, 4, 4))
    for w, g in zip(ws, gs):
        a = np.maximum(np.asarray(g) * np.asarray(w), 0.0)  # one head: the mean is itself
        r = r + a @ r
    got = jx.grad_attention_rollout(model, x, target=target, token=None).values
    np.testing.assert_allclose(np.asarray(got), r, rtol=1e-5, atol=1e-7)
    row = jx.grad_attention_rollout(model, x, target=target, prefix=0, upsample=False).values
    np.testing.assert_allclose(np.asarray(row), r[:, 0].reshape(2, 2, 2), rtol=1e-5, atol=1e-7)
    # the captured weights are the hand-computed ones
    _, captured = jx.capture_attention(model, x)
    for w, c in zip(ws, captured.values()):
        np.testing.assert_allclose(np.asarray(c)[:, 0], np.asarray(w), rtol=1e-6)


def test_grad_rollout_linen_equals_nnx_and_depends_on_the_target(vit):
    x = vit["x"]
    a = np.asarray(jx.grad_attention_rollout(vit["linen"], x, target=1, upsample=False).values)
    b = np.asarray(jx.grad_attention_rollout(vit["nnx"], x, target=1, upsample=False).values)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    c = np.asarray(jx.grad_attention_rollout(vit["linen"], x, target=2, upsample=False).values)
    assert not np.allclose(a, c)


# ---- token Grad-CAM and patches ------------------------------------------------------------------


def test_token_grad_cam_is_grad_cam_on_the_patch_grid(vit):
    model, x = vit["linen"], vit["x"]
    got = np.asarray(jx.token_grad_cam(model, x, target=2, layer="block1/norm1", relu=False,
                                       upsample=False).values)

    @jax.jit
    def reference(m, z):
        def head(d):
            out, act = m.probe(z, "block1/norm1", d)
            return jnp.sum(out[:, 2]), act

        return jax.grad(head, has_aux=True)(jnp.zeros((N, 5, 8)))

    g, act = reference(model, jnp.asarray(x))
    g, act = np.asarray(g)[:, 1:], np.asarray(act)[:, 1:]  # the patch tokens
    want = np.sum(g.mean(1, keepdims=True) * act, -1).reshape(N, 2, 2)  # the signed map
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.all(want != 0)  # (NNX layers go through the probe grad_cam's tests cover)


def test_patch_segments_make_patches_the_features_of_exact_shapley(vit):
    seg = jx.patch_segments(S, S, 4)
    np.testing.assert_array_equal(seg, np.kron(np.arange(4).reshape(2, 2), np.ones((4, 4))))
    model, x = vit["linen"], vit["x"]
    out = jx.exact_shapley(model, x, target=0, segments=seg)
    y = np.asarray(jax.jit(lambda m, z: m(z))(model, np.concatenate([x, np.zeros_like(x)])))
    f = y[:N, 0] - y[N:, 0]
    assert out.values.shape == (N, 4)
    np.testing.assert_allclose(np.asarray(out.values).sum(1), f, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="patch"):
        jx.patch_segments(S, S, 3)


def test_bad_read_out_settings_name_the_argument(vit):
    model, x = vit["linen"], vit["x"]
    with pytest.raises(ValueError, match=r"\btoken\b"):
        jx.attention_rollout(model, x, token=5)
    with pytest.raises(ValueError, match=r"\bgrid\b"):
        jx.attention_rollout(model, x, grid=(1, 3))
    with pytest.raises(ValueError, match=r"\bhead_fusion\b"):
        jx.attention_rollout(model, x, head_fusion="median")
    with pytest.raises(ValueError, match=r"\blayer\b"):
        jx.token_grad_cam(model, x, target=0, layer="head")


# ---- the zoo's ViT -------------------------------------------------------------------------------


def test_vit_checkpoints_round_trip(tmp_path, vit):
    from jaxplain.app import zoo

    module = ViT(patch=4, dim=8, depth=2, heads=2, mlp=8, n_classes=3)
    path = zoo.save(tmp_path / "vit.ckpt", module, vit["linen"].params, (S, S, 3), {"accuracy": 1})
    loaded, variables, header = zoo.load(path)
    assert loaded == module and header["arch"] == "ViT"
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(vit["linen"].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_the_zoo_vit_learns_the_digits(weights_cache):
    """The demo's and the example's quick ViT (4 epochs), trained once per test run in
    the run's shared cache (whichever of them comes first trains it): on the digits
    78.2% measured, on Fashion-MNIST where Debian's package is installed 80.9%."""
    from jaxplain.app import zoo

    trained, ds = zoo.vit_classifier(epochs=4, cache=weights_cache)
    assert ds.name in ("digits", "fashion-mnist") and trained.accuracy > 0.7, trained.accuracy
    again, _ = zoo.vit_classifier(epochs=4, cache=weights_cache)
    assert again.cached and again.accuracy == trained.accuracy
    rollout = np.asarray(jx.attention_rollout(trained.model, ds.x_test[:8]).values)
    assert rollout.shape == (8,) + ds.x_test.shape[1:3] and np.all(rollout >= 0)


def test_patch_faithfulness_tells_a_faithful_map_from_random_and_from_a_reversed_one():
    from jaxplain.app.demo_attention import patch_faithfulness

    seg = jx.patch_segments(4, 4, 2)  # 4 patches
    w = np.repeat(np.repeat(np.array([[8.0, 4.0], [2.0, 1.0]]), 2, 0), 2, 1)[..., None, None]
    model = jx.testing.linear_model(jnp.asarray(w, jnp.float32))
    x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.0, size=(8, 4, 4, 1)), jnp.float32)
    good = np.tile([8.0, 4.0, 2.0, 1.0], (8, 1))
    rows = patch_faithfulness(model, x, None, seg, {"good": good, "reversed": -good},
                              jax.random.key(0), n_random=4)
    by = {r["method"]: r for r in rows}
    assert by["good"]["beats_random_deletion"] and by["good"]["beats_random_insertion"]
    assert not by["reversed"]["beats_random_deletion"]
    assert not by["reversed"]["beats_random_insertion"]
    assert by["good"]["deletion"] < by["random (mean of 4)"]["deletion"] < by["reversed"]["deletion"]


@pytest.mark.slow
def test_the_zoo_vit_reads_fashion_mnist_with_patches_of_seven(tmp_path, monkeypatch):
    import gzip

    from jaxplain.app import zoo

    def idx(path, arr):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big")
                                                       for n in arr.shape)
        with gzip.open(path, "wb") as fh:
            fh.write(header + arr.astype(np.uint8).tobytes())

    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 8)):
        idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    monkeypatch.setenv("JAXPLAIN_FASHION_MNIST", str(tmp_path))
    trained, ds = zoo.vit_classifier(epochs=1)
    assert ds.name == "fashion-mnist" and trained.module.patch == 7
    assert jx.attention_layers(trained.model, ds.x_test[:2]) == ["block0/attn", "block1/attn"]
    assert np.asarray(jx.attention_rollout(trained.model, ds.x_test[:2]).values).shape == (2, 28, 28)


def _causal(x):
    t = x.reshape(x.shape[0], 4, -1)
    causal = jnp.tril(jnp.ones((4, 4), bool))
    a = jax.nn.softmax(t @ t.swapaxes(1, 2), axis=-1, where=causal)
    return jnp.sum(a @ t, axis=(1, 2))[:, None]


def test_a_softmax_masked_with_where_is_captured():
    x = jx.testing.random_images(3, n=2, size=4)
    _, got = jx.capture_attention(_causal, x)
    t = np.asarray(x).reshape(2, 4, -1)
    s = np.where(np.tril(np.ones((4, 4), bool)), t @ t.transpose(0, 2, 1), -np.inf)
    np.testing.assert_allclose(got["attention0"][:, 0], _softmax(s), rtol=1e-5, atol=1e-7)
