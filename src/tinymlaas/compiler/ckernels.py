"""The kernel library's former module: names kept for callers, the code is in
:mod:`tinymlaas.compiler.kernels` and the kernels are the ``.c`` files next to it."""

from __future__ import annotations

from tinymlaas.compiler.kernels import (
    BINARY_EXPR,
    C_TYPES,
    FIXED,
    TEMPLATES,
    UNARY_EXPR,
    kernel_dependencies,
    kernel_source,
    prelude,
    split_func,
)

__all__ = ["BINARY_EXPR", "C_TYPES", "PRELUDE", "UNARY_EXPR", "kernel_dependencies",
           "kernel_source", "split_func"]

#: The portable prelude (fixed-point helpers every generated source starts with).
PRELUDE = prelude("portable")
_FIXED = FIXED
_TEMPLATES = TEMPLATES
