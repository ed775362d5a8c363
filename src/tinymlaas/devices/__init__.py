"""Device profiles (a built-in catalog) and static fit analysis of models against them."""

from tinymlaas.devices.analysis import (
    Analysis,
    FitVerdict,
    OperatorSupport,
    analyze_model,
    fit_verdict,
    verdict_label,
)
from tinymlaas.devices.catalog import device_names, get_device, load_catalog
from tinymlaas.devices.support import RUNTIMES, supported_by

__all__ = [
    "RUNTIMES",
    "Analysis",
    "FitVerdict",
    "OperatorSupport",
    "analyze_model",
    "device_names",
    "fit_verdict",
    "get_device",
    "load_catalog",
    "supported_by",
    "verdict_label",
]
