"""Learning with explanations: amortised Shapley explainers (FastSHAP).

Importing this package registers `amortised_shap` (`jaxplain._core.registry`);
`fit_amortised`, `AmortisedExplainer` and `AmortisedFit` are exported by
`jaxplain/__init__.py` by name.
"""

from . import amortised as amortised
from .amortised import AmortisedExplainer as AmortisedExplainer
from ._fastshap_fit import AmortisedFit as AmortisedFit
from ._fastshap_fit import fit_amortised as fit_amortised
