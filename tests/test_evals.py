"""`n_evals` counts every row the model evaluates, the rows a last chunk repeats included
(`batching.fold` overlaps the last chunk with its predecessor), and the registry's `evals`
(hence `jaxplain.plan`) predicts it: checked against a model that counts its inputs."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain._core import registry

D = 9


def _counting_model(rows):
    """A model on `(B, 1, D, 2)` inputs whose channel 1 carries the example index (the
    baseline keeps it), recording how many inputs of each example it evaluates."""
    def host(z):
        z = np.asarray(z)
        rows.update(z[:, 0, 0, 1].round().astype(int).tolist())
        return z[..., 0].sum(axis=(1, 2)).astype(np.float32)

    return lambda z: jax.pure_callback(host, jax.ShapeDtypeStruct((z.shape[0],), jnp.float32), z)


CALLS = {  # (call, the evaluations per example without repeats)
    "kernel_shap": (dict(key=jax.random.key(0), n_samples=11, segments=jnp.arange(D)[None] % 4),
                    2 + 11),
    "shapley_sampling": (dict(key=jax.random.key(0), n_permutations=6,
                              segments=jnp.arange(D)[None]), 2 + 6 * (D - 1)),
    "rise": (dict(key=jax.random.key(0), n_masks=37, cells=1), 37),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_n_evals_counts_repeated_rows_and_the_registry_predicts_it(name):
    n, bs = 3, 7
    x = np.zeros((n, 1, D, 2), np.float32)
    x[..., 0] = 1.0
    x[..., 1] = np.arange(n)[:, None, None]
    base = x.copy()
    base[..., 0] = 0.0
    rows = collections.Counter()
    model = _counting_model(rows)
    call, nominal = CALLS[name]
    kw = dict(call, target=None, baseline=jnp.asarray(base), batch_size=bs)
    out = getattr(jx, name)(model, jnp.asarray(x), **kw)
    seen = np.array([rows[i] for i in range(n)])
    np.testing.assert_array_equal(np.asarray(out.n_evals), seen)
    assert registry.get(name).total(model, jnp.asarray(x), **kw) == seen.sum()
    assert seen.sum() > n * nominal  # chunks of 7 repeat rows


def test_row_counts_of_huge_calls_take_no_memory_per_chunk():
    # computed per example, not per block: 2**30 units per example once built an entry
    # for every block, and counts near int32 (which the methods then reject) took 23 GB
    from jaxplain.perturbation import engine

    counts = engine.stream_rows(3, 2**30, 1, 64, 100)
    assert counts.shape == (3,) and (counts >= 2**30).all() and (counts < 2**30 + 2**20).all()
