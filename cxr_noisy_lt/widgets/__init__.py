"""Explore a benchmark, its Grad-CAM maps and its noisy labels in JupyterLab: the explorers and their views, one module each
(`core`: the parts they share; `results`: the results explorer; `gradcam`: the Grad-CAM explorer)."""
from . import core, results, gradcam
from .core import *
from .results import *
from .gradcam import *

__all__ = [*core.__all__, *results.__all__, *gradcam.__all__]
