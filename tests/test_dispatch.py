"""A warm call of a method runs its compiled program(s) and no eager XLA op besides.

An eager op (`jnp.zeros`, `jnp.broadcast_to`, `jnp.asarray(v, dtype)` on a host
value) outside the jitted program costs a host dispatch per call: on the
benchmark CNN's 16-image gradients (about 10 ms) one `jnp.zeros` in `lrp` took
about 1 ms, and every such op is one more host round trip on an accelerator.
Arguments built on the host (NumPy, `_validate.to_device`) cost none.
"""

import collections
import traceback

import jax
import numpy as np
import pytest
from _cnn_helpers import tiny_cnn

import jaxplain as jx

core = pytest.importorskip("jax._src.core")
if not hasattr(getattr(core, "EvalTrace", None), "process_primitive"):  # pragma: no cover
    pytest.skip("this jax has no EvalTrace.process_primitive to watch", allow_module_level=True)

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(2, 8, 8, 3)).astype(np.float32)
NET, VARIABLES = tiny_cnn(X)
MODEL = jx.from_linen(NET, VARIABLES)
T = np.array([0, 2])
SEG = jx.grid_segments(8, 8, 2)
KEY = jax.random.key(0)
ATTR = RNG.uniform(size=X.shape).astype(np.float32)

CALLS = {
    "saliency": lambda: jx.saliency(MODEL, X, target=T),
    "gradient_x_input": lambda: jx.gradient_x_input(MODEL, X, target=T),
    "integrated_gradients": lambda: jx.integrated_gradients(MODEL, X, target=T, steps=4),
    "smoothgrad": lambda: jx.smoothgrad(MODEL, X, target=T, key=KEY, n_samples=2),
    "vargrad": lambda: jx.vargrad(MODEL, X, target=T, key=KEY, n_samples=2),
    "expected_gradients": lambda: jx.expected_gradients(
        MODEL, X, target=T, references=X, key=KEY, n_samples=2
    ),
    "guided_backprop": lambda: jx.guided_backprop(MODEL, X, target=T),
    "deconvnet": lambda: jx.deconvnet(MODEL, X, target=T),
    "deeplift": lambda: jx.deeplift(MODEL, X, target=T),
    "deeplift_shap": lambda: jx.deeplift_shap(MODEL, X, target=T, references=X),
    "lrp": lambda: jx.lrp(MODEL, X, target=T),
    "grad_cam": lambda: jx.grad_cam(MODEL, X, target=T, layer="conv1"),
    "grad_cam_plus_plus": lambda: jx.grad_cam_plus_plus(MODEL, X, target=T, layer="conv1"),
    "guided_grad_cam": lambda: jx.guided_grad_cam(MODEL, X, target=T, layer="conv1"),
    "layer_conductance": lambda: jx.layer_conductance(
        MODEL, X, target=T, layer="conv1", steps=4
    ),
    "lime": lambda: jx.lime(MODEL, X, target=T, segments=SEG, n_samples=8, key=KEY),
    "kernel_shap": lambda: jx.kernel_shap(MODEL, X, target=T, segments=SEG, n_samples=8, key=KEY),
    "shapley_sampling": lambda: jx.shapley_sampling(
        MODEL, X, target=T, segments=SEG, n_permutations=2, key=KEY
    ),
    "exact_shapley": lambda: jx.exact_shapley(MODEL, X, target=T, segments=SEG),
    "feature_ablation": lambda: jx.feature_ablation(MODEL, X, target=T, segments=SEG),
    "occlusion": lambda: jx.occlusion(MODEL, X, target=T, window=4, strides=4),
    "rise": lambda: jx.rise(MODEL, X, target=T, n_masks=4, key=KEY),
    "deletion": lambda: jx.deletion(MODEL, X, ATTR, target=T, steps=4),
    "insertion": lambda: jx.insertion(MODEL, X, ATTR, target=T, steps=4),
    "road": lambda: jx.road(MODEL, X, ATTR, target=T, fractions=(0.0, 0.5), key=KEY),
    "infidelity": lambda: jx.infidelity(MODEL, X, ATTR, target=T, key=KEY, n_samples=4),
    "faithfulness_correlation": lambda: jx.faithfulness_correlation(
        MODEL, X, ATTR, target=T, key=KEY, n_samples=4
    ),
    "internal_influence": lambda: jx.internal_influence(
        MODEL, X, target=T, layer="conv1", steps=4
    ),
    "layer_gradient_x_activation": lambda: jx.layer_gradient_x_activation(
        MODEL, X, target=T, layer="conv1"
    ),
}


PACKAGE = jx.__file__.rsplit("/", 1)[0] + "/"


def eager_ops(fn, within=PACKAGE):
    """`{"primitive @ file:line": count}` of eager ops bound from code under `within`.

    It sees primitives bound outside any jit (`jnp.zeros`, `jnp.broadcast_to`, a
    `jnp.asarray` copy); a cached call of a jitted function takes JAX's C++ path
    and is not seen.
    """
    seen = collections.Counter()
    orig = core.EvalTrace.process_primitive

    def spy(self, prim, *args, **kwargs):
        frames = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(within)]
        if frames:
            f = frames[-1]
            seen[f"{prim} @ {f.filename.rsplit('/', 1)[-1]}:{f.lineno}"] += 1
        return orig(self, prim, *args, **kwargs)

    core.EvalTrace.process_primitive = spy
    try:
        jax.block_until_ready(fn())
    finally:
        core.EvalTrace.process_primitive = orig
    return dict(seen)


def test_the_spy_sees_eager_ops_and_attributes_them_to_their_file():
    import jax.numpy as jnp

    here = eager_ops(lambda: jnp.zeros((2, 3)) * 2.0, within=__file__)
    assert any(k.endswith(f"test_dispatch.py:{LINE}") for k in here), here
    assert eager_ops(lambda: jnp.zeros((2, 3)) * 2.0) == {}  # not bound from jaxplain


LINE = test_the_spy_sees_eager_ops_and_attributes_them_to_their_file.__code__.co_firstlineno + 3


@pytest.mark.parametrize("name", sorted(CALLS))
def test_warm_call_dispatches_no_eager_op(name):
    fn = CALLS[name]
    jax.block_until_ready(fn())  # compile
    assert eager_ops(fn) == {}, f"{name} runs eager XLA ops outside its compiled program"
