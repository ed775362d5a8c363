"""Accuracy-aware auto-compression: search pipelines, keep the Pareto set, recommend one."""

from tinymlaas.optimize.search import (
    Candidate,
    OptimizeResult,
    optimize,
    pareto_front,
    parse_budget,
)
from tinymlaas.optimize.sensitivity import LayerSensitivity, layer_sensitivity

__all__ = ["Candidate", "LayerSensitivity", "OptimizeResult", "layer_sensitivity", "optimize",
           "pareto_front", "parse_budget"]
