"""Concept-level explanations: concept activation vectors and TCAV.

Importing this package registers `tcav` (`jaxplain._core.registry`);
`concept_activation_vector` and the result types `CAV` and `TCAVResult` are
exported by `jaxplain/__init__.py` by name.
"""

from . import cav as cav
from . import fit as fit
from .cav import CAV as CAV
from .cav import concept_activation_vector as concept_activation_vector
from . import stats as stats
from .stats import ttest_ind as ttest_ind
from . import tcav as tcav
from .tcav import TCAVResult as TCAVResult
