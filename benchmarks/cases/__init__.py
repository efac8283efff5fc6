"""The table of benchmark cases, keyed by the names of the method registry.

A `Case` names a registered method (`jaxplain._core.registry`), the kind of model
evaluation its limit uses, and a builder that gets the benchmark model and the
method's public function and returns a `Bench`: the jaxplain call, the number of
model evaluations, the peer calls on the PyTorch twin (every configuration of a
sweep, plus the peer's defaults) and optional agreement checks.

The benchmarks keep no list of jaxplain's methods: `plan()` matches this table
against the registry. A case whose name is not a registered method is an error;
a registered method without a case is reported as having none.

`--quick` runs only the fastest peer configuration of each sweep (a smoke run);
the full run adds the peers' defaults and the rest of each sweep. Settings are
in each family's module.
"""

from __future__ import annotations

from jaxplain._core import registry

from . import gradients as G
from . import layer as La
from . import metrics as M
from . import perturbation as Pe
from . import relevance as R
from .base import Bench as Bench
from .base import Case as Case
from .base import Ctx as Ctx

BOTH = ("small", "large")


CASES: tuple[Case, ...] = (
    Case("saliency", "fwdbwd", G.saliency, BOTH, quick=True),
    Case("integrated_gradients", "fwdbwd", G.integrated_gradients, BOTH, quick=True),
    Case("smoothgrad", "fwdbwd", G.smoothgrad),
    Case("expected_gradients", "fwdbwd", G.expected_gradients),
    Case("guided_backprop", "fwdbwd", G.guided_backprop),
    Case("deeplift", "fwdbwd", R.deeplift),
    Case("deeplift_shap", "fwdbwd", R.deeplift_shap),
    Case("lrp", "fwdbwd", R.lrp),
    Case("grad_cam", "fwdbwd_to_layer", La.grad_cam, BOTH, quick=True),
    Case("guided_grad_cam", "fwdbwd", La.guided_grad_cam),
    Case("neuron_conductance", "fwdbwd", La.neuron_conductance),
    *(Case(name, "fwdbwd", La.layer_path_case(name)) for name in La.LAYER_PATH),
    Case("lime", "fwd", Pe.lime, quick=True),
    Case("kernel_shap", "fwd", Pe.kernel_shap, quick=True),
    Case("shapley_sampling", "fwd", Pe.shapley_sampling, quick=True),
    Case("exact_shapley", "fwd", Pe.exact_shapley),
    Case("occlusion", "fwd", Pe.occlusion),
    Case("feature_ablation", "fwd", Pe.feature_ablation),
    Case("rise", "fwd", Pe.rise),
    Case("deletion", "fwd", M.deletion),
    Case("road", "fwd", M.road),
)
"""Every case; `python -m benchmarks --only NAME` selects by `Case.name` (a registry name)."""


def plan(cases: tuple[Case, ...] | None = None) -> tuple[list[tuple[Case, registry.Entry]],
                                                          list[registry.Entry]]:
    """`(cases with their registry entries, registered methods without a case)`, for
    `cases` (default: `CASES`, read at the call).

    Raises:
      ValueError: a case whose name is not a registered method, or two cases of one name.
    """
    import jaxplain  # noqa: F401 - importing the package registers every method

    cases = CASES if cases is None else cases
    names = [c.name for c in cases]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"benchmarks.cases: expected one case per method, got {twice} twice")
    unknown = [n for n in names if n not in registry.REGISTRY]
    if unknown:
        raise ValueError(
            f"benchmarks.cases: expected names of registered methods "
            f"(jaxplain._core.registry), got {unknown}"
        )
    matched = [(c, registry.get(c.name)) for c in cases]
    uncovered = [e for e in registry.entries() if e.name not in set(names)]
    return matched, uncovered
