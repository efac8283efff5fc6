"""A warm call of a method runs its compiled program(s) and no eager XLA op besides.

An eager op (`jnp.zeros`, `jnp.broadcast_to`, `jnp.asarray(v, dtype)` on a host
value) outside the jitted program costs a host dispatch per call: on the
benchmark CNN's 16-image gradients (about 10 ms) one `jnp.zeros` in `lrp` took
about 1 ms, and every such op is one more host round trip on an accelerator.
Arguments built on the host (NumPy, `_validate.to_device`) cost none.

The calls come from `_public_calls` (the same valid calls `test_bad_inputs`
perturbs), so a new public function is watched without being listed here.
"""

import collections
import functools
import inspect
import traceback

import jax
import numpy as np
import pytest
from _public_calls import N, good_arguments, good_call, public_functions

import jaxplain as jx

core = pytest.importorskip("jax._src.core")
if not hasattr(getattr(core, "EvalTrace", None), "process_primitive"):  # pragma: no cover
    pytest.skip("this jax has no EvalTrace.process_primitive to watch", allow_module_level=True)


def _calls():
    """`{id: zero-argument call}`: a valid call of every public function `_public_calls`
    can build, and, where the function takes a target, one with a per-example target
    array too (`as_target` takes either)."""
    calls = {}
    for name, fn in public_functions():
        if good_call(fn) is None:
            continue
        calls[name] = functools.partial(_call, fn)
        if "target" in inspect.signature(fn).parameters:
            calls[f"{name}[target_array]"] = functools.partial(_call, fn, target=TARGETS)
    return calls


def _call(fn, **overrides):
    pos, kw = good_arguments(fn, **overrides)
    return fn(*pos, **kw)


TARGETS = np.arange(N) % 3
CALLS = _calls()


def test_every_method_is_watched():
    for name in ("saliency", "lrp", "lime", "kernel_shap", "road", "infidelity", "grad_cam"):
        assert name in CALLS and f"{name}[target_array]" in CALLS, name
    assert len(CALLS) >= 60, len(CALLS)


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
