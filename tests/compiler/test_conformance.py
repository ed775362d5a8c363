"""ONNX's own backend node tests, compiled to C and run on the host.

Every test case shipped in the installed ``onnx`` package whose operators the compiler
supports is compiled, built (all cases into one shared library) and compared with the
expected outputs at the case's own tolerances, and with the exact reference
(:mod:`tinymlaas.compiler.reference`). Cases the compiler deliberately does not
handle are listed by name below with the reason; for those the test checks that the
compiler refuses them with :class:`UnsupportedModelError` instead of producing code.
(ONNX's ReduceMean cases feed ``axes`` at run time; ``test_reduce_mean.py`` runs them with
their axes as constants.)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from tinymlaas.compiler import SUPPORTED_OPS, CompileResult, HostModel, build_host, compile_onnx
from tinymlaas.compiler.reference import Reference
from tinymlaas.errors import UnsupportedModelError

#: Cases of supported operators that need something the compiler does not offer.
UNSUPPORTED_CASES: dict[str, str] = {
    "test_add_uint32": "uint32 tensors",
    "test_add_uint64": "uint64 tensors",
    "test_averagepool_3d_default": "3-D pooling windows",
    "test_averagepool_3d_dilations_small": "3-D pooling windows",
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True": "3-D pooling windows",  # noqa: E501
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False": "3-D pooling windows",  # noqa: E501
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True": "3-D pooling windows",  # noqa: E501
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False": "3-D pooling windows",  # noqa: E501
    "test_batchnorm_example_training_mode": "training-mode semantics",
    "test_batchnorm_epsilon_training_mode": "training-mode semantics",
    "test_dequantizelinear_e4m3fn": "float8e4m3fn tensors",
    "test_dequantizelinear_e4m3fn_float16": "float8e4m3fn tensors",
    "test_dequantizelinear_e4m3fn_zero_point": "float8e4m3fn tensors",
    "test_dequantizelinear_e5m2": "float8e5m2 tensors",
    "test_dequantizelinear_uint4": "uint4 tensors",
    "test_dequantizelinear_int4": "int4 tensors",
    "test_dequantizelinear_uint2": "uint2 tensors",
    "test_dequantizelinear_int2": "int2 tensors",
    "test_dequantizelinear_float4e2m1": "float4e2m1 tensors",
    "test_dequantizelinear_blocked": "blocked quantization",
    "test_div_int8": "integer division",
    "test_div_int16": "integer division",
    "test_div_int32_trunc": "integer division",
    "test_div_uint8": "integer division",
    "test_div_uint16": "integer division",
    "test_div_uint32": "uint32 tensors",
    "test_div_uint64": "uint64 tensors",
    "test_dropout_default_mask": "the Dropout mask output",
    "test_dropout_default_mask_ratio": "the Dropout mask output",
    "test_training_dropout_default": "bool tensors",
    "test_training_dropout_default_mask": "bool tensors",
    "test_training_dropout": "bool tensors",
    "test_training_dropout_mask": "bool tensors",
    "test_training_dropout_zero_ratio": "bool tensors",
    "test_training_dropout_zero_ratio_mask": "bool tensors",
    "test_max_uint32": "uint32 tensors",
    "test_max_uint64": "uint64 tensors",
    "test_max_float16": "float16 tensors",
    "test_max_float64": "float64 tensors",
    "test_maxpool_with_argmax_2d_precomputed_pads": "MaxPool indices output",
    "test_maxpool_with_argmax_2d_precomputed_strides": "MaxPool indices output",
    "test_maxpool_3d_default": "3-D pooling windows",
    "test_maxpool_3d_dilations": "3-D pooling windows",
    "test_maxpool_3d_dilations_use_ref_impl": "3-D pooling windows",
    "test_maxpool_3d_dilations_use_ref_impl_large": "3-D pooling windows",
    "test_min_uint32": "uint32 tensors",
    "test_min_uint64": "uint64 tensors",
    "test_min_float16": "float16 tensors",
    "test_min_float64": "float64 tensors",
    "test_mul_uint32": "uint32 tensors",
    "test_mul_uint64": "uint64 tensors",
    "test_quantizelinear_e4m3fn": "float8e4m3fn tensors",
    "test_quantizelinear_e5m2": "float8e5m2 tensors",
    "test_quantizelinear_uint4": "uint4 tensors",
    "test_quantizelinear_int4": "int4 tensors",
    "test_quantizelinear_uint2": "uint2 tensors",
    "test_quantizelinear_int2": "int2 tensors",
    "test_quantizelinear_float4e2m1": "float4e2m1 tensors",
    "test_quantizelinear_blocked_asymmetric": "blocked quantization",
    "test_quantizelinear_blocked_symmetric": "blocked quantization",
    "test_reduce_mean_do_not_keepdims_example": "ReduceMean axes given at run time",
    "test_reduce_mean_do_not_keepdims_random": "ReduceMean axes given at run time",
    "test_reduce_mean_keepdims_example": "ReduceMean axes given at run time",
    "test_reduce_mean_keepdims_random": "ReduceMean axes given at run time",
    "test_reduce_mean_default_axes_keepdims_example": "ReduceMean axes given at run time",
    "test_reduce_mean_default_axes_keepdims_random": "ReduceMean axes given at run time",
    "test_reduce_mean_negative_axes_keepdims_example": "ReduceMean axes given at run time",
    "test_reduce_mean_negative_axes_keepdims_random": "ReduceMean axes given at run time",
    "test_reshape_allowzero_reordered": "empty tensors (a zero dimension)",
    "test_sub_uint32": "uint32 tensors",
    "test_sub_uint64": "uint64 tensors",
}


def _cases() -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases

        cases = collect_testcases(None)
    return [
        case for case in cases
        if all(n.op_type in SUPPORTED_OPS for n in case.model.graph.node)
        and any(n.op_type not in ("Constant", "Identity") for n in case.model.graph.node)
    ]


CASES = _cases()


def _parameter_reason(case) -> str | None:
    """Pad, Resize and Upsample cases feed pads, scales or sizes at run time (the compiler
    needs them constant; ``bench/onnx_node_tests.py`` runs them with the test's values as
    constants), and Resize's linear and cubic modes are not implemented."""
    node = case.model.graph.node[-1]
    if node.op_type not in ("Pad", "Resize", "Upsample"):
        return None
    mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "nearest")
    if node.op_type == "Resize" and mode != "nearest":
        return f"{mode} Resize (only nearest)"
    return f"{node.op_type} parameters given at run time"


UNSUPPORTED_CASES.update({case.name: reason for case in CASES
                          if (reason := _parameter_reason(case)) is not None})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[CompileResult, Path]]:
    """Compile every supported case and build them all into one library."""
    root = tmp_path_factory.mktemp("conformance")
    results = {}
    for index, case in enumerate(CASES):
        if case.name in UNSUPPORTED_CASES:
            continue
        results[case.name] = compile_onnx(case.model, root / case.name, name=f"case{index}",
                                          simplify=False)
    library = build_host(list(results.values()), root / "cases.so")
    return {name: (result, library) for name, result in results.items()}


def test_allow_list_names_real_cases() -> None:
    names = {case.name for case in CASES}
    assert set(UNSUPPORTED_CASES) <= names
    assert len(CASES) - len(UNSUPPORTED_CASES) >= 200


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case, built, tmp_path: Path) -> None:
    if case.name in UNSUPPORTED_CASES:
        with pytest.raises(UnsupportedModelError):
            compile_onnx(case.model, tmp_path, name="refused", simplify=False)
        return
    result, library = built[case.name]
    model = HostModel(result, library=library)
    reference = Reference(case.model, simplify=False)
    for inputs, expected in case.data_sets:
        got = model.run(*inputs)
        got = got if isinstance(got, tuple) else (got,)
        exact = reference.run(*inputs)
        assert len(got) == len(expected) == len(exact)
        for out, ref, mine in zip(got, expected, exact, strict=True):
            ref = np.asarray(ref)
            assert out.shape == ref.shape == mine.shape
            assert out.dtype == ref.dtype == mine.dtype
            np.testing.assert_allclose(out, ref, rtol=case.rtol, atol=case.atol)
            # The exact reference: integers bit for bit; floats too, but for the last bit
            # of exp / log / tanh / erf (the C library's against float64 rounded once).
            np.testing.assert_allclose(mine, ref, rtol=case.rtol, atol=case.atol)
            if out.dtype.kind == "f":
                scale = float(np.nanmax(np.abs(mine), initial=0.0))
                np.testing.assert_allclose(out, mine, rtol=1e-6, atol=1e-6 * scale)
            else:
                np.testing.assert_array_equal(out, mine)
