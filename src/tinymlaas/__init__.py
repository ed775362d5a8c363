"""tinymlaas: compress, compile and compare machine-learning models for a target device."""

__version__ = "0.1.0"
__all__ = ["__version__"]
