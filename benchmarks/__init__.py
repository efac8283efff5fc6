"""jaxplain's benchmark harness: jaxplain vs the physical limit vs Captum, shap and lime.

Run `python -m benchmarks --help`. `main(argv)` is the programmatic entry point.
"""

from .run import main as main

__all__ = ["main"]
