"""Experiments that compose the library: detection of a recorded run with verification, sharpness of a
finished run by replay, optimiser comparisons, interventions on groups, and the demo pipeline."""

from .compare import BranchSpec, compare, parse_branches
from .demo import run_demo
from .detect import detect_run
from .intervene import intervene
from .sharpness import StepCurvature, run_curvature

__all__ = ["detect_run", "run_curvature", "StepCurvature", "compare", "parse_branches", "BranchSpec", "intervene",
           "run_demo"]
