"""The perturbation engine and its methods: occlusion, feature ablation, RISE, LIME,
KernelSHAP, Shapley values and the global views. Importing this package registers its
methods (`jaxplain._core.registry`)."""

from . import engine as engine
from . import occlusion as occlusion
from . import global_ as global_
from . import kernelshap as kernelshap
from . import lime as lime
from . import shapley as shapley
