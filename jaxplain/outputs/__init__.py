"""Output explanations: counterfactuals, decision planes, anchors, explanations over weights.

Importing this package registers `counterfactual`, `decision_plane` and `anchors`
(`jaxplain._core.registry`); `over_weights` and the result types are exported by
`jaxplain/__init__.py` by name.
"""

from . import counterfactual as counterfactual
from .counterfactual import Counterfactual as Counterfactual
from . import plane as plane
from .plane import Plane as Plane
from . import anchors as anchors
from .anchors import Anchor as Anchor
from . import ensemble as ensemble
from .ensemble import OverWeights as OverWeights
from .ensemble import over_weights as over_weights
