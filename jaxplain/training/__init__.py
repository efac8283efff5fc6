"""Learning with explanations: attribution priors as loss terms, and an optax step.

`jaxplain.training.attribution_penalty(method, mask)` penalises attribution mass on
a region of the input (Ross et al. 2017; Erion et al. 2021); `train_step` adds
`lam * penalty` to the cross-entropy in one jitted optax step. Attributions are
differentiated with respect to the weights (double backprop).
"""

from .priors import METHODS as METHODS
from .priors import AttributionPenalty as AttributionPenalty
from .priors import attribution_mass as attribution_mass
from .priors import attribution_penalty as attribution_penalty
from .priors import cross_entropy as cross_entropy
from .priors import log_prob_sum as log_prob_sum
from .priors import prior_loss as prior_loss
from .priors import train_step as train_step
