"""The default chunk off CPU comes from the compiled program's memory (issue 33 item 5)."""

import jax
import numpy as np
import pytest

import jaxplain as jx
from jaxplain._core import chunks


@pytest.fixture(scope="module")
def model_and_x():
    m = jx.testing.tiny_cnn(features=(4, 8))
    x = np.asarray(jx.testing.random_images(0, n=4, size=16))
    return jx.from_linen(m, m.init(jax.random.key(0), x)), x


def test_cpu_keeps_the_compile_layers_default(model_and_x):
    model, x = model_and_x
    with jx.config.override(cpu_rewrites="1"):
        assert chunks.device_batch_size(model, x) is None  # rewrites on: 64 at trace time


def test_without_the_cpu_rewrites_rows_fill_a_share_of_memory(model_and_x, monkeypatch):
    model, x = model_and_x
    with jx.config.override(cpu_rewrites="0"):
        per_row = chunks._bytes_per_row(model, (16,) + x.shape[1:], x.dtype)
        assert per_row > x[0].nbytes  # at least the input row, plus activations
        for budget in (200 * per_row, 1e3 * per_row, 1e9 * per_row):
            monkeypatch.setattr(chunks, "_budget", lambda x, b=budget: b)
            chunks_cache_clear()
            rows = chunks.device_batch_size(model, x)
            want = max(chunks.MIN_ROWS, min(chunks.MAX_ROWS, int(budget // per_row)))
            assert rows == want - want % 8 and rows % 8 == 0


def test_a_call_without_batch_size_gets_the_memory_sized_chunk(model_and_x, monkeypatch):
    model, x = model_and_x
    seen = []
    real = chunks.device_batch_size
    monkeypatch.setattr("jaxplain._core.registry.device_batch_size",
                        lambda m, z, **kw: seen.append(real(m, z, **kw)) or seen[-1])
    with jx.config.override(cpu_rewrites="0"):
        off = jx.integrated_gradients(model, x, target=1, steps=4)
    with jx.config.override(cpu_rewrites="1"):
        on = jx.integrated_gradients(model, x, target=1, steps=4)
    assert seen[0] is not None and seen[1] is None
    np.testing.assert_allclose(off.values, on.values, rtol=1e-5, atol=1e-7)


def test_bad_input_is_refused_before_the_chunk_probe_compiles(model_and_x):
    """Off the CPU rewrites (the path of a GPU), the first call on an architecture
    compiles a probe of its memory per row: the call's own checks come first."""
    model, x = model_and_x
    chunks_cache_clear()
    with jx.config.override(cpu_rewrites="0"), jx.testing.count_compiles() as c:
        with pytest.raises(ValueError, match="target"):
            jx.integrated_gradients(model, x, target=99, steps=4)
        with pytest.raises(ValueError, match="steps"):
            jx.integrated_gradients(model, x, target=1, steps=0)
    assert c["n"] == 0
    with jx.config.override(cpu_rewrites="0"), jx.testing.count_compiles() as c:
        jx.integrated_gradients(model, x, target=1, steps=4)
    assert c["n"] >= 1  # the probe (and the method, unless an earlier test compiled it)


def chunks_cache_clear():
    from jaxplain._core import cache

    cache._SHAPE_CACHE.clear()
