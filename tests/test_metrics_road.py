"""ROAD: noisy linear imputation against a dense NumPy solve, and the curve it produces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain.metrics import impute as _impute

WEIGHTS = {(dy, dx): (1 / 12 if dy and dx else 1 / 6) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
del WEIGHTS[(0, 0)]


def np_impute(img, removed):
    """Reference: the neighbour-mean system over the removed pixels, built densely, solved by LAPACK."""
    h, w, c = img.shape
    idx = {p: i for i, p in enumerate(zip(*np.nonzero(removed)))}
    out = np.array(img, np.float64)
    if not idx:
        return out
    a = np.zeros((len(idx), len(idx)))
    b = np.zeros((len(idx), c))
    for (r, q), i in idx.items():
        for (dy, dx), wt in WEIGHTS.items():
            rr, qq = r + dy, q + dx
            if not (0 <= rr < h and 0 <= qq < w):
                continue
            a[i, i] += wt
            if removed[rr, qq]:
                a[i, idx[(rr, qq)]] -= wt
            else:
                b[i] += wt * img[rr, qq]
    u = np.linalg.solve(a, b)
    for (r, q), i in idx.items():
        out[r, q] = u[i]
    return out


def np_road(f, x, pixel_attr, fractions, order="morf"):
    """Reference curve (noise 0): removal sets, dense imputation, the model one image at a time."""
    n, h, w, _ = x.shape
    d = h * w
    curve = np.zeros((n, len(fractions)))
    for i in range(n):
        pos = np.argsort(-pixel_attr[i].ravel(), kind="stable")
        for j, fr in enumerate(fractions):
            k = int(np.floor(fr * d + 0.5))
            sel = pos[:k] if order == "morf" else pos[d - k :]
            removed = np.zeros(d, bool)
            removed[sel] = True
            img = np_impute(np.asarray(x[i], np.float64), removed.reshape(h, w))
            curve[i, j] = f(img[None])[0]
    return curve


_jit_impute = jax.jit(_impute.impute, static_argnames=("tol", "max_iter"))


def impute_one(img, removed, **kw):
    return _jit_impute(img[None], removed[None], **kw)[0]


def sum_model(x):
    return x.reshape(x.shape[0], -1).sum(1)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(3, 6, 7, 2)).astype(np.float32)


@pytest.mark.parametrize("p", [0.15, 0.5, 0.9])
def test_impute_matches_dense_solve(images, p):
    rng = np.random.default_rng(1)
    img = images[0]
    removed = rng.uniform(size=img.shape[:2]) < p
    removed[0, 0] = True  # a corner: the border rows of the system have fewer neighbours
    out = jax.jit(impute_one)(jnp.asarray(img), jnp.asarray(removed))
    np.testing.assert_allclose(np.asarray(out), np_impute(img, removed), atol=2e-5)
    np.testing.assert_array_equal(np.asarray(out)[~removed], img[~removed])


def test_everything_removed_imputes_zero(images):
    out = impute_one(jnp.asarray(images[0]), jnp.ones(images.shape[1:3], bool))
    np.testing.assert_array_equal(np.asarray(out), 0.0)


def blocky_mask(rng, h, w, p, block=4):
    """Removal shaped like attribution order: a coarse random field above its 1 - p quantile."""
    f = np.kron(rng.normal(size=(h // block + 1, w // block + 1)), np.ones((block, block)))
    f = f[:h, :w] + 0.3 * rng.normal(size=(h, w))
    return f > np.quantile(f, 1 - p)


@pytest.mark.parametrize("shape", [(4, 4), (1, 40), (33, 20), (24, 24)])
def test_batched_impute_matches_dense_solve_per_image(shape):
    """Odd sizes, a single row, a fine level small enough to be solved at once; a batch mixing
    nothing removed, everything removed and blocky holes, each as if solved alone."""
    h, w = shape
    rng = np.random.default_rng(5)
    imgs = rng.uniform(size=(5, h, w, 3)).astype(np.float32)
    removed = np.stack([blocky_mask(rng, h, w, p) for p in (0.0, 0.3, 0.9, 0.99, 1.0)])
    removed[-1] = True
    out = np.asarray(jax.jit(_impute.impute)(jnp.asarray(imgs), jnp.asarray(removed)))
    for i in range(5):
        if i < 4:  # the last system has no boundary (singular): its image becomes 0
            np.testing.assert_allclose(out[i], np_impute(imgs[i], removed[i]), atol=5e-5)
        alone = impute_one(jnp.asarray(imgs[i]), jnp.asarray(removed[i]))
        # alone or in a batch, both are within the solve's accuracy
        np.testing.assert_allclose(out[i], np.asarray(alone), atol=5e-5)
    np.testing.assert_array_equal(out[-1], 0.0)


def test_preconditioner_converges_in_few_iterations():
    """48x48 with 99% removed: Jacobi-preconditioned CG was still 0.4 off after 25 iterations
    and 7e-4 off after 100 (measured); the multigrid-preconditioned solve is within 1e-4 in 25."""
    rng = np.random.default_rng(6)
    img = rng.uniform(size=(48, 48, 1)).astype(np.float32)
    removed = blocky_mask(rng, 48, 48, 0.99, block=8)
    out = impute_one(jnp.asarray(img), jnp.asarray(removed), max_iter=25)
    np.testing.assert_allclose(np.asarray(out), np_impute(img, removed), atol=1e-4)


def test_vcycle_is_symmetric_positive_definite():
    """CG needs an SPD preconditioner: the V-cycle's matrix on the unknowns, column by column."""
    rng = np.random.default_rng(7)
    h, w = 9, 11  # three levels (9x11 -> 5x6 -> 3x3, solved densely) with padding on the way
    removed = rng.uniform(size=(1, h, w)) < 0.7
    m = jnp.asarray(removed, jnp.float32)
    wsum = jnp.asarray(_impute.neighbour_weight(h, w), jnp.float32)
    matvec = lambda v: m[:, None] * (wsum * v - _impute.stencil(v))
    hier = _impute._hierarchy(m)
    assert len(hier[0]) == 2  # the fine level and one coarse level smoothed, then the dense one
    idx = np.flatnonzero(removed[0])
    basis = np.zeros((idx.size, 1, h, w), np.float32)
    basis.reshape(idx.size, -1)[np.arange(idx.size), idx] = 1.0
    cols = jax.vmap(lambda e: _impute._vcycle(hier, matvec, e[None])[0])(jnp.asarray(basis))
    b = np.asarray(cols).reshape(idx.size, -1)[:, idx].T
    np.testing.assert_allclose(b, b.T, atol=1e-6)
    assert np.linalg.eigvalsh((b + b.T) / 2).min() > 1e-3
    off = np.asarray(cols).reshape(idx.size, -1)[:, ~removed[0].ravel()]
    np.testing.assert_array_equal(off, 0.0)  # nothing leaks onto kept pixels


def test_linear_image_is_imputed_exactly():
    """The 8-neighbour mean of a function linear in (row, col) is its value: interior holes vanish."""
    h, w = 12, 10
    r, q = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = np.stack([0.3 * r - 0.2 * q + 1.0, -0.1 * r + 0.05 * q], -1).astype(np.float32)
    rng = np.random.default_rng(2)
    removed = rng.uniform(size=(h, w)) < 0.6
    removed[0, :] = removed[-1, :] = removed[:, 0] = removed[:, -1] = False
    removed[3:9, 2:8] = True  # a large hole: unknowns next to unknowns
    out = impute_one(jnp.asarray(img), jnp.asarray(removed))
    np.testing.assert_allclose(np.asarray(out), img, atol=1e-4)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_curve_matches_numpy_reference_on_sum_model(images, order):
    rng = np.random.default_rng(3)
    attr = rng.normal(size=images.shape[:3]).astype(np.float32)
    fr = (0.0, 0.2, 0.5, 0.8, 1.0)
    c = jx.road(sum_model, images, attr, target=None, fractions=fr, order=order, noise_std=0.0, key=jax.random.key(0))
    ref = np_road(sum_model, images, attr, fr, order)
    np.testing.assert_allclose(np.asarray(c.values), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(c.fractions), fr)
    np.testing.assert_allclose(np.asarray(c.auc), np.trapezoid(ref, fr, axis=1), rtol=1e-4)
    # fraction 0 is the model on x; fraction 1 leaves no boundary: the image becomes 0
    np.testing.assert_allclose(ref[:, 0], images.reshape(3, -1).sum(1), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(c.values)[:, -1], 0.0, atol=1e-6)


def test_known_effect_of_one_removed_pixel():
    """Removing one interior pixel of a sum model changes the sum by (neighbour mean - value)."""
    img = np.zeros((1, 5, 5, 1), np.float32)
    img[0, 2, 2, 0] = 12.0  # a spike among zeros: imputed as 0
    img[0, 1, 2, 0] = 6.0  # a direct neighbour: the spike is imputed as 6/6 = 1
    attr = np.zeros((1, 5, 5), np.float32)
    attr[0, 2, 2] = 1.0
    c = jx.road(sum_model, img, attr, target=None, fractions=(0.0, 1 / 25), noise_std=0.0, key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(c.values), [[18.0, 7.0]], rtol=1e-6)


def test_segments_remove_whole_features(images):
    seg = np.repeat(np.arange(7)[None, :], 6, axis=0) // 2  # 4 column bands
    vals = np.asarray([[3.0, 2.0, 1.0, 0.0]] * 3, np.float32)
    c = jx.road(
        sum_model, images, vals, target=None, segments=seg, fractions=(0.0, 0.25), noise_std=0.0,
        key=jax.random.key(0),
    )
    removed = seg == 0
    ref = [np_impute(img, removed).sum() for img in images]
    np.testing.assert_allclose(np.asarray(c.values)[:, 1], ref, rtol=1e-5)


@pytest.fixture(scope="module")
def smooth():
    k1, k2 = jax.random.split(jax.random.key(7))
    params = (jax.random.normal(k1, (6 * 7 * 2, 5)) / 8, jax.random.normal(k2, (5, 3)))
    return jx.Model(lambda p, x: jnp.tanh(x.reshape(x.shape[0], -1) @ p[0]) @ p[1], params)


def test_independent_of_batch_size_and_jit(images, smooth):
    attr = np.asarray(jx.saliency(smooth, images, target=1).values)
    kw = {
        "target": 1,
        "key": jax.random.key(3),
        "noise_std": 0.05,
        "fractions": (0.0, 0.3, 0.6, 0.9),
    }
    ref = jx.road(smooth, images, attr, **kw)
    for bs in (1, 7):  # one row per chunk; chunks that do not divide the rows
        out = jx.road(smooth, images, attr, batch_size=bs, **kw)
        np.testing.assert_allclose(np.asarray(out.values), np.asarray(ref.values), atol=1e-5)
    jitted = jax.jit(lambda m, x, a: jx.road(m, x, a, **kw))(smooth, jnp.asarray(images), attr)
    np.testing.assert_allclose(np.asarray(jitted.values), np.asarray(ref.values), atol=1e-5)
    np.testing.assert_allclose(np.asarray(jitted.auc), np.asarray(ref.auc), atol=1e-5)


def test_key_determines_the_noise(images, smooth):
    attr = np.asarray(jx.saliency(smooth, images, target=0).values)
    run = lambda k, s=0.1: np.asarray(
        jx.road(smooth, images, attr, target=0, key=jax.random.key(k), noise_std=s).values
    )
    np.testing.assert_array_equal(run(0), run(0))
    assert not np.allclose(run(0), run(1))
    np.testing.assert_array_equal(run(0)[:, 0], run(1)[:, 0])  # nothing removed, no noise
    np.testing.assert_allclose(run(0, 0.0), run(1, 0.0))


def test_morf_of_a_good_attribution_drops_faster_than_random():
    """A linear model with a few heavy pixels on a rough image: attributions w * (x - local mean)."""
    rng = np.random.default_rng(4)
    n, h, w = 8, 10, 10
    wts = np.zeros((h, w, 1), np.float32)
    wts.flat[rng.choice(h * w, 12, replace=False)] = 5.0
    wts += rng.uniform(0, 0.2, size=wts.shape).astype(np.float32)
    model = jx.testing.linear_model(jnp.asarray(wts[..., None]))
    x = rng.uniform(size=(n, h, w, 1)).astype(np.float32)
    pad = np.pad(x[..., 0], ((0, 0), (1, 1), (1, 1)))
    mean = sum(
        wt * pad[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for (dy, dx), wt in WEIGHTS.items()
    )
    mean = mean / _impute.neighbour_weight(h, w)
    good = wts[..., 0] * (x[..., 0] - mean)  # the first-order effect of imputing a pixel
    rand = rng.normal(size=(n, h, w)).astype(np.float32)
    kw = {"target": 0, "key": jax.random.key(0), "fractions": tuple(np.linspace(0, 0.5, 11))}
    a_good = np.asarray(jx.road(model, x, good, **kw).auc)
    a_rand = np.asarray(jx.road(model, x, rand, **kw).auc)
    assert a_good.mean() < a_rand.mean()
    assert (a_good < a_rand).mean() >= 0.75
    # and LeRF keeps the target higher than MoRF for the good attribution
    a_lerf = np.asarray(jx.road(model, x, good, order="lerf", **kw).auc)
    assert (a_lerf > a_good).all()


def test_no_recompile_on_second_call(images, smooth):
    attr = np.asarray(jx.saliency(smooth, images, target=1).values)
    kw = {"target": 1, "key": jax.random.key(0), "fractions": (0.0, 0.5)}
    jx.road(smooth, images, attr, **kw)
    with jx.testing.count_compiles() as c:
        jx.road(smooth, images, attr * 2, **kw)
        jx.road(smooth, images, attr, noise_std=0.2, **kw)
    assert c["n"] == 0


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"fractions": (0.0, 1.5)}, "fractions: expected"),
        ({"fractions": (0.5, 0.2)}, "strictly increasing"),
        ({"fractions": (0.2, 0.2)}, "strictly increasing"),
        ({"fractions": (0.5,)}, "fractions: expected"),
        ({"fractions": (-0.1, 0.5)}, "fractions: expected"),
        ({"fractions": (0.0, float("nan"))}, "fractions: expected"),
        ({"fractions": "0.5"}, "fractions: expected"),
        ({"fractions": ((0.1, 0.2),)}, "fractions: expected"),
        ({"order": "random"}, "order: expected"),
        ({"noise_std": -1.0}, "noise_std: expected"),
        ({"noise_std": 0.1, "key": None}, "key: expected"),
        ({"tol": 0.0}, "tol: expected"),
        ({"max_iter": 0}, "max_iter: expected"),
        ({"batch_size": 0}, "batch_size: expected"),
    ],
)
def test_bad_input_raises_before_compiling(images, kw, match):
    attr = images.sum(-1)
    args = {"target": None, "key": jax.random.key(0)}
    args.update(kw)
    with jx.testing.count_compiles() as c, pytest.raises((ValueError, TypeError), match=match):
        jx.road(sum_model, images, attr, **args)
    assert c["n"] == 0


def test_shape_mismatch_raises(images):
    with pytest.raises(ValueError, match="attributions: expected"):
        jx.road(sum_model, images, images[:, :3], target=None, noise_std=0.0, key=jax.random.key(0))


def test_evaluate_knows_road(images, smooth):
    table = jx.evaluate(
        {"saliency": jx.saliency}, smooth, images, target=1, metrics=("road",), key=0
    )
    assert table["road"].shape == (1, 3) and np.isfinite(table["road"]).all()
    assert table.higher_is_better["road"] is False


def test_half_precision_images_are_solved_in_float32(images):
    """bfloat16 images: the imputation runs in float32 (LAPACK has no bfloat16 inverse, and CG
    could not reach `tol` in 8 bits of mantissa) and the result comes back in bfloat16."""
    x16 = jnp.asarray(images, jnp.bfloat16)
    removed = jnp.asarray(np.random.default_rng(8).uniform(size=images.shape[:3]) < 0.6)
    out = _jit_impute(x16, removed)
    assert out.dtype == jnp.bfloat16
    ref = _jit_impute(x16.astype(jnp.float32), removed)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref), rtol=1e-2, atol=1e-2)
    kept = ~np.asarray(removed)
    np.testing.assert_array_equal(np.asarray(out)[kept], np.asarray(x16)[kept])
