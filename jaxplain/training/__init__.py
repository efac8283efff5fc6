"""Learning with explanations: attribution priors as loss terms with an optax step,
and amortised Shapley explainers (FastSHAP).

`jaxplain.training.attribution_penalty(method, mask)` penalises attribution mass on
a region of the input (Ross et al. 2017; Erion et al. 2021); `train_step` adds
`lam * penalty` to the cross-entropy in one jitted optax step. Attributions are
differentiated with respect to the weights (double backprop).

Importing this package registers `amortised_shap` (`jaxplain._core.registry`);
`fit_amortised`, `AmortisedExplainer` and `AmortisedFit` are exported by
`jaxplain/__init__.py` by name.
"""

from . import amortised as amortised
from ._fastshap_fit import AmortisedFit as AmortisedFit
from ._fastshap_fit import fit_amortised as fit_amortised
from .amortised import AmortisedExplainer as AmortisedExplainer
from .priors import METHODS as METHODS
from .priors import AttributionPenalty as AttributionPenalty
from .priors import attribution_mass as attribution_mass
from .priors import attribution_penalty as attribution_penalty
from .priors import cross_entropy as cross_entropy
from .priors import log_prob_sum as log_prob_sum
from .priors import prior_loss as prior_loss
from .priors import train_step as train_step
