"""Every range check at its edges: the last valid value passes, one past it is refused.

A range check that slips by one (`<=` for `<`) passes every test that only uses
values far from the edge; these cases sit on it. Valid calls are traced with
`jax.eval_shape` (the Python-time validation runs on the concrete arguments, the
program is traced but never compiled or run); invalid ones must raise a
`ValueError`/`TypeError` naming the argument before anything compiles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from _method_table import H, N, ROWS, W, env

K = 3  # the table's model has 3 classes
UNITS = H * W * 2  # conv0's activation: 8 x 8 x 2 units per example

CASES = [  # (method, argument, last valid value, first invalid values)
    ("saliency", "target", K - 1, (K, -1)),
    ("saliency", "target", np.full(N, K - 1), (np.full(N, K), np.full(N, -1))),
    ("saliency", "target", [K - 1] * N, ([K] * N, [-1] * N)),
    ("kernel_shap", "target", K - 1, (K, -1)),
    ("neuron_conductance", "neuron", UNITS - 1, (UNITS, -1)),
    ("neuron_conductance", "neuron", (7, 7, 1), ((8, 0, 0), (0, 0, 2), (-1, 0, 0))),
    ("counterfactual", "target_class", K - 1, (K, -1)),
    ("integrated_gradients", "steps", 1, (0,)),
    ("rise", "cells", 8, (9, 0)),
    ("rise", "p", 1.0, (0.0, 1.0 + 1e-6)),
    ("occlusion", "window", 8, (9, 0)),
    ("occlusion", "window", (8, 8), ((9, 8), (8, 0))),
    ("faithfulness_correlation", "subset_size", H * W, (H * W + 1, 0)),  # pixels are the features
    ("faithfulness_correlation", "subset_size", 1.0, (1.5, 0.0)),
    ("pointing_game", "tolerance", 0, (-1,)),
    ("ssim", "win_size", 3, (2,)),
    ("decision_plane", "resolution", 2, (1,)),
    ("anchors", "samples_per_round", 2, (1,)),
    ("kernel_shap", "n_samples", 1, (0,)),
    ("shapley_sampling", "n_permutations", 2, (0,)),
]


def _ids():
    return [f"{m}-{a}-{i}" for i, (m, a, _, _) in enumerate(CASES)]


@pytest.mark.parametrize("method, arg, good, bad", CASES, ids=_ids())
def test_the_last_valid_value_passes_and_the_next_is_refused(method, arg, good, bad):
    env()  # built eagerly, outside the traced call below
    row = ROWS[method]
    jax.eval_shape(lambda: row.call(**{arg: good}))  # validation passes, nothing compiles
    for value in bad:
        with jx.testing.count_compiles() as c:
            with pytest.raises((ValueError, TypeError), match=rf"\b{arg}\b"):
                row.call(**{arg: value})
        assert c["n"] == 0, (method, arg, value)


def test_segment_labels_must_count_from_zero_without_gaps():
    env()
    row = ROWS["feature_ablation"]
    seg = np.asarray(jx.grid_segments(8, 8, 2))  # labels 0..3
    jax.eval_shape(lambda: row.call(segments=seg))
    for bad in (seg + 1, np.where(seg == 2, 3, seg), seg - 1):  # no 0, a gap, a -1
        with pytest.raises(ValueError, match="segments: expected"):
            row.call(segments=bad)
    per = np.stack([seg] * N)
    per[-1] = np.where(per[-1] == 1, 2, per[-1])  # the last example alone has a gap
    with pytest.raises(ValueError, match=rf"example {N - 1}"):
        row.call(segments=per)


def test_float16_input_says_what_happens():
    import warnings

    model = jx.testing.linear_model(jnp.ones((4, 3)))
    x = jnp.ones((2, 4), jnp.float16)
    with pytest.warns(UserWarning, match="x: float16 input is computed in float16"):
        jx.saliency(model, x, target=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float32 and bfloat16 stay silent
        jx.saliency(model, x.astype(jnp.float32), target=0)
        jx.saliency(model, x.astype(jnp.bfloat16), target=0)
