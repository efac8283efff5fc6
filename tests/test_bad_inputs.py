"""The bad-input corpus: every public function x every bad value of its arguments.

A case passes when the call raises `ValueError`/`TypeError` whose message names the
argument, or returns a correct (here: finite) result. It fails on any other
exception (an error from inside XLA or Flax, an IndexError...), on a message that
does not name the argument, or on NaN/inf in the result.

The table is built from the signatures of the names exported by `jaxplain`:
functions landing later are picked up automatically when their arguments are in
`GOOD` (how to build a valid value, in `_public_calls`, shared with
`test_dispatch`) and `BAD` (the bad values to try). Known failures of other
modules are listed in `KNOWN` (strict xfail: fixing them makes the test ask for
the entry to be removed).
"""

from __future__ import annotations

import inspect
import re

import flax.linen as nn
import jax
import numpy as np
import pytest
from _public_calls import C, H, N, W, env, good_arguments, good_call, public_functions

import jaxplain as jx
from jaxplain import testing

_nan_x = lambda e: np.where(np.arange(C) == 1, np.nan, e["x"]).astype(np.float32)  # noqa: E731
_inf_x = lambda e: np.where(np.arange(C) == 2, np.inf, e["x"]).astype(np.float32)  # noqa: E731
_COUNT = [0, -1, 2.5, True, "4", None]
_POS_FLOAT = [-1.0, float("nan"), float("inf"), "a"]

BAD = {  # argument name -> {case id: bad value (or a function of env)}
    "x": {
        "nan": _nan_x,
        "inf": _inf_x,
        "uint8": lambda e: (e["x"] * 255).astype(np.uint8),
        "bool": lambda e: e["x"] > 0.5,
        "complex": lambda e: e["x"].astype(np.complex64),
        "1d": lambda e: e["x"].reshape(-1),
        "empty_batch": lambda e: e["x"][:0],
        "empty_axis": lambda e: e["x"][:, :0],
        "str": "image.png",
        "none": None,
        "dict": {"x": 1},
        "keys": lambda e: jax.random.split(e["key"], N),
        "ragged_list": [[1.0, 2.0], [1.0]],
        "wrong_channels": lambda e: e["x"][..., :1],
        "float64_overflow": lambda e: np.full(e["x"].shape, 1e300),
    },
    "target": {
        "too_big": 3,
        "negative": -1,
        "huge": 10**9,
        "wrong_len": lambda e: np.array([0, 1, 2]),
        "2d": lambda e: np.array([[0, 1]]),
        "float": 1.5,
        "str": "pred",
        "bool": True,
        "float_array": lambda e: np.array([0.0, 1.0]),
        "out_of_range_array": lambda e: np.array([0, 7]),
        "callable_wrong_shape": lambda e: lambda out: out,
        "callable_raises": lambda e: lambda out: out[:, 10]["x"],
    },
    "key": {
        "str": "seed",
        "float": 1.5,
        "two_keys": lambda e: jax.random.split(e["key"], 2),
        "uint32_3": lambda e: np.zeros(3, np.uint32),
        "float_array": lambda e: np.zeros(2, np.float32),
    },
    "batch_size": {
        "zero": 0,
        "negative": -3,
        "float": 2.5,
        "str": "8",
        "bool": True,
        "huge": 2**40,
    },
    "steps": {f"v{i}": v for i, v in enumerate(_COUNT)},
    "n_samples": {f"v{i}": v for i, v in enumerate(_COUNT)},
    "n_masks": {f"v{i}": v for i, v in enumerate(_COUNT)},
    "n_permutations": {f"v{i}": v for i, v in enumerate(_COUNT)},
    "cells": {"zero": 0, "float": 2.5, "str": "2"},
    "window": {"zero": 0, "too_big": 100, "float": 2.5, "str": "4", "wrong_len": (2, 2, 2, 2, 2)},
    "strides": {"zero": 0, "float": 2.5, "str": "4"},
    "win_size": {"even": 4, "zero": 0, "too_big": 99},
    "noise_level": {f"v{i}": v for i, v in enumerate(_POS_FLOAT)},
    "noise_scale": {f"v{i}": v for i, v in enumerate(_POS_FLOAT)},
    "radius": {f"v{i}": v for i, v in enumerate(_POS_FLOAT)},
    "kernel_width": {f"v{i}": v for i, v in enumerate(_POS_FLOAT)},
    "alpha": {f"v{i}": v for i, v in enumerate(_POS_FLOAT)},
    "blur_sigma": {"negative": -1.0, "nan": float("nan"), "str": "a"},
    "p": {"negative": -0.5, "above_one": 1.5, "nan": float("nan")},
    "subset_size": {"zero": 0, "negative": -1, "too_big_fraction": 1.5, "str": "a"},
    "baseline": {
        "wrong_shape": lambda e: np.ones((3, 3), np.float32),
        "bogus_str": "bogus",
        "nan": lambda e: np.full(e["x"].shape, np.nan, np.float32),
        "nan_scalar": float("nan"),
        "inf_scalar": float("-inf"),
        "complex": lambda e: np.ones(e["x"].shape, np.complex64),
    },
    "segments": {
        "float": lambda e: e["seg"].astype(np.float32),
        "gaps": lambda e: e["seg"] * 2,
        "wrong_shape": lambda e: np.zeros((7, 7), np.int32),
        "negative": lambda e: e["seg"] - 1,
        "str": "slic",
        "wrong_n": lambda e: np.stack([e["seg"]] * 3),
    },
    "layer": {"missing": "no_such_layer", "float": 3.5},
    "neuron": {
        "too_big": 10**6,
        "negative": -1,
        "float": 1.5,
        "bool": True,
        "str": "3",
        "short_tuple": (0,),
        "wrong_len": lambda e: np.array([0, 1, 2]),
        "float_array": lambda e: np.array([0.0, 1.0]),
    },
    "rule": {"bogus": "bogus"},
    "distance": {"bogus": "bogus"},
    "interpolation": {"bogus": "bogus", "int": 1},
    "noise": {"bogus": "bogus"},
    "kind": {"bogus": "bogus"},
    "similarity": {"bogus": "bogus"},
    "normalize": {"bogus": "bogus"},
    "perturbation": {"bogus": "bogus"},
    "order": {"bogus": "bogus", "int": 1},
    "fractions": {
        "above_one": (0.0, 1.5),
        "decreasing": (0.5, 0.1),
        "one_value": (0.5,),
        "str": "0.5",
        "nan": (0.0, float("nan")),
        "2d": ((0.1, 0.2),),
    },
    "noise_std": {"negative": -1.0, "nan": float("nan"), "str": "a"},
    "attributions": {
        "wrong_shape": lambda e: np.ones((N, 5, 5), np.float32),
        "nan": _nan_x,
        "str": "saliency",
        "empty": lambda e: np.ones((0, H, W), np.float32),
    },
    "mask": {"wrong_shape": lambda e: np.ones((N, 5, 5), bool), "str": "mask"},
    "model": {
        "int": 3,
        "none": None,
        "str": "resnet",
        "linen_without_variables": nn.Dense(3),
        "wrong_output": lambda e: lambda x: x.sum(),
    },
    "explain": {"int": 3, "str": "saliency"},
    "a": {"wrong_shape": lambda e: np.ones((N, 5, 5, C), np.float32), "str": "img"},
    "images": {"1d": lambda e: np.ones(5, np.float32), "str": "img"},
    "height": {"zero": 0, "float": 2.5},
    "width": {"zero": 0, "float": 2.5},
    "grid": {"zero": 0, "too_big": 100},
}

ERROR_NAMES = {  # (argument, case) -> the arguments an error may legitimately name instead
    ("x", "wrong_channels"): ("x", "model", "attributions"),
    ("model", "wrong_output"): ("model", "target"),
    ("attributions", "wrong_shape"): ("attributions", "mask", "x"),
    ("a", "wrong_shape"): ("a", "b"),
}
MUST_RAISE = {("x", "nan"), ("x", "inf"), ("x", "float64_overflow"), ("attributions", "nan")}

KNOWN: dict[str, str] = {}  # case id -> the failure, reported to the module's owner


def _cases():
    cases = []
    for name, fn in public_functions():
        call = good_call(fn)
        if call is None:
            continue
        params = inspect.signature(fn).parameters
        for arg in params:
            for case, value in BAD.get(arg, {}).items():
                if value is None and arg in ("key",) and params[arg].default is not None:
                    continue
                cases.append(pytest.param(name, arg, case, id=f"{name}-{arg}-{case}"))
    return cases


CASES = _cases()


def _value(v):
    return (
        v(env())
        if callable(v)
        and not isinstance(v, (nn.Module, type))
        and getattr(v, "__name__", "") == "<lambda>"
        else v
    )


def _names(msg: str, name: str) -> bool:
    """The message names the argument: `name:` (the convention), or the word for long names."""
    if re.search(rf"(^|[\s'`(\"]){re.escape(name)}[:'`\"]", msg):
        return True
    return len(name) >= 3 and re.search(rf"\b{re.escape(name)}\b", msg) is not None


def test_corpus_is_large():
    assert len(CASES) >= 200, len(CASES)


@pytest.mark.parametrize("fname, arg, case", CASES)
def test_bad_input(fname, arg, case, request):
    if request.node.callspec.id in KNOWN:
        request.applymarker(pytest.mark.xfail(reason=KNOWN[request.node.callspec.id], strict=True))
    fn = getattr(jx, fname)
    call_pos, args = good_arguments(fn, **{arg: _value(BAD[arg][case])})
    names = ERROR_NAMES.get((arg, case), (arg,))
    try:
        result = fn(*call_pos, **args)
        leaves = jax.tree.leaves(jax.device_get(result))
    except (ValueError, TypeError) as err:
        msg = str(err)
        assert any(_names(msg, n) for n in names), (
            f"{type(err).__name__} does not name {names}: {msg}"
        )
        return
    assert (arg, case) not in MUST_RAISE, f"accepted {arg}={case} and returned a result"
    for leaf in leaves:
        a = np.asarray(leaf)
        if a.dtype.kind == "f":
            assert np.isfinite(a).all(), f"silent NaN/inf in the result for {arg}={case}"


# ---- counts whose evaluations overflow the int32 flat index ---------------------------------

BUDGETS = [  # (function, count argument): every method whose work grows with a count
    ("integrated_gradients", "steps"),
    ("layer_integrated_gradients", "steps"),
    ("smoothgrad", "n_samples"),
    ("squaregrad", "n_samples"),
    ("vargrad", "n_samples"),
    ("expected_gradients", "n_samples"),
    ("lime", "n_samples"),
    ("kernel_shap", "n_samples"),
    ("shapley_sampling", "n_permutations"),
    ("rise", "n_masks"),
]


@pytest.mark.parametrize("value", [2**30, 2**31 - 1, 10**12], ids=["2^30", "int32_max", "1e12"])
@pytest.mark.parametrize("fname, arg", BUDGETS, ids=[f"{f}-{a}" for f, a in BUDGETS])
def test_count_beyond_int32(fname, arg, value):
    """N=2 examples x a count just past 2^31 / 2 raises at Python time (no tracing, no work)."""
    fn = getattr(jx, fname)
    call_pos, args = good_arguments(fn, **{arg: value})
    with testing.count_compiles() as compiles:
        with pytest.raises(ValueError, match=rf"^{arg}: expected") as err:
            fn(*call_pos, **args)
    assert compiles["n"] == 0
    if value < 10**12:  # within the int32 count itself: the message explains the batch limit
        assert "int32" in str(err.value) and "split the batch" in str(err.value)


def test_budget_boundaries():
    from jaxplain._core import validate as V

    limit = (V.MAX_INT32 // 3 - 2) // 5
    assert V.check_budget(limit, "steps", 3, per_unit=5, fixed=2) == limit
    with pytest.raises(ValueError, match=rf"steps: expected at most {limit} for a batch of 3"):
        V.check_budget(limit + 1, "steps", 3, per_unit=5, fixed=2)
    with pytest.raises(TypeError, match="n_samples: expected an int"):
        V.check_budget(2.5, "n_samples", 1)


def test_noise_tunnel_counts_the_inner_steps():
    """noise_tunnel(method=integrated_gradients, steps=s): n_samples x (s + 2) evaluations per example."""
    e = env()
    with pytest.raises(ValueError, match="n_samples: expected at most"):
        jx.noise_tunnel(e["model"], e["x"], method=jx.integrated_gradients, target=1, key=e["key"],
                        n_samples=(2**31 - 1) // (2 * 1002) + 1, steps=1000)
