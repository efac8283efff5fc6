"""Evaluating explanations: every metric, re-exported from its module."""

from .base import Curve as Curve
from .curves import deletion as deletion
from .curves import insertion as insertion
from .curves import monotonicity as monotonicity
from .evaluate import MetricTable as MetricTable
from .evaluate import evaluate as evaluate
from .faithfulness import faithfulness_correlation as faithfulness_correlation
from .faithfulness import infidelity as infidelity
from .localisation import completeness_gap as completeness_gap
from .localisation import complexity as complexity
from .localisation import efficiency_gap as efficiency_gap
from .localisation import pointing_game as pointing_game
from .localisation import relevance_mass as relevance_mass
from .localisation import relevance_rank_accuracy as relevance_rank_accuracy
from .localisation import sparseness as sparseness
from .road import road as road
from .robustness import avg_sensitivity as avg_sensitivity
from .robustness import local_lipschitz_estimate as local_lipschitz_estimate
from .robustness import max_sensitivity as max_sensitivity
from .sanity import RandomisationResult as RandomisationResult
from .sanity import model_parameter_randomisation as model_parameter_randomisation
from .sanity import random_logit as random_logit
from .sanity import ssim as ssim
