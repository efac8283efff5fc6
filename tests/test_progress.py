"""Progress bars on long eager perturbation runs: same numbers, silent under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing

W = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4, 1, 2)), jnp.float32)
MODEL = testing.linear_model(W)
X = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 4, 4, 1)), jnp.float32)
SEG = jx.grid_segments(4, 4, 2)

CASES = {
    "lime": lambda **kw: jx.lime(MODEL, X, target=0, segments=SEG, key=0, n_samples=40, batch_size=16, **kw),
    "kernel_shap": lambda **kw: jx.kernel_shap(MODEL, X, target=0, segments=SEG, key=0, n_samples=40,
                                               batch_size=16, **kw),
    "shapley_sampling": lambda **kw: jx.shapley_sampling(MODEL, X, target=0, segments=SEG, key=0,
                                                         n_permutations=4, batch_size=8, **kw),
    "exact_shapley": lambda **kw: jx.exact_shapley(MODEL, X, target=0, segments=SEG, batch_size=4, **kw),
    "feature_ablation": lambda **kw: jx.feature_ablation(MODEL, X, target=0, segments=SEG, batch_size=3,
                                                         **kw),
    "occlusion": lambda **kw: jx.occlusion(MODEL, X, target=0, window=2, batch_size=4, **kw),
    "rise": lambda **kw: jx.rise(MODEL, X, target=0, key=0, n_masks=16, cells=2, batch_size=8, **kw),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_progress_bar_shows_eagerly_and_changes_no_number(name, capsys):
    quiet = CASES[name]()
    capsys.readouterr()
    loud = CASES[name](progress=True)
    err = capsys.readouterr().err
    assert "eval" in err and name in err  # tqdm wrote a bar named after the method
    for a, b in zip(jax.tree.leaves(quiet), jax.tree.leaves(loud)):
        np.testing.assert_array_equal(a, b)
    # the quiet variant is still cached: asking for no progress compiles nothing new
    with testing.count_compiles() as c:
        CASES[name]()
    assert c["n"] == 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_progress_bar_counts_every_evaluation_once(name, monkeypatch):
    import tqdm.auto

    finals = []

    class Recording(tqdm.auto.tqdm):
        def close(self):
            if not self.disable:  # tqdm closes again from __del__
                finals.append((self.n, self.total))
            super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    out = CASES[name](progress=True)
    # chunks that overlap the one before them (see batching.fold) report only new rows
    total = int(np.sum(out.n_evals))
    assert finals == [(total, finals[0][1])] and finals[0][1] in (None, total)


def test_nothing_prints_under_jit(capsys):
    out = jax.jit(lambda: CASES["lime"](progress=True).values)()
    assert capsys.readouterr().err == ""
    # The caller's jit compiles one program with its own XLA options; the eager call
    # compiles jaxplain's with jaxplain._xla.compiler_options(): float32 round-off.
    np.testing.assert_allclose(out, CASES["lime"]().values, rtol=2e-5)


def test_progress_must_be_a_bool():
    with pytest.raises(TypeError, match="progress: expected True, False or .auto."):
        CASES["occlusion"](progress="yes")
