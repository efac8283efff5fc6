"""Gradient methods, CNN internals (Grad-CAM, layer attribution, feature maps), DeepLIFT
and LRP. Importing this package registers its methods (`jaxplain._core.registry`)."""

from . import basic as basic
from . import cam as cam
from . import deeplift as deeplift
from . import layer as layer
from . import modelviz as modelviz
from . import relevance as relevance
from . import sampled as sampled
