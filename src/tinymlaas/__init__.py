"""tinymlaas: compress, compile and compare machine-learning models for a target device."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # The SDK pulls in httpx and the API schemas: load it only when asked for.
    if name == "Client":
        from tinymlaas.client import Client

        return Client
    raise AttributeError(f"module 'tinymlaas' has no attribute {name!r}")
