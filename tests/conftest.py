import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

# Tests run in float32 as on accelerators; no float64 assumptions.
jax.config.update("jax_enable_x64", False)


@pytest.fixture
def key():
    return jax.random.key(0)
