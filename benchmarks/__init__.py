"""jaxplain's benchmark harness: jaxplain vs the physical limit vs Captum, shap, lime and Quantus.

Run `python -m benchmarks --help`, or `bash benchmarks/accelerator.sh` on a GPU.
`main(argv)` is the programmatic entry point.
"""

import os

# JAX and the torch peers share an accelerator: JAX allocates on demand rather than taking
# 75% of its memory up front (read when JAX first uses the device; a user's setting wins).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from .run import main as main  # noqa: E402

__all__ = ["main"]
