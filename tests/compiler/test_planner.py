"""The arena planner: no two live buffers overlap, and memory is reused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import float_ops_graph, residual_block
from onnx import TensorProto, helper, numpy_helper

from tinymlaas.compiler import Program, build_program
from tinymlaas.compiler.planner import ALIGNMENT, Interval, outside_bytes, plan_arena, plan_program


def _overlaps(a: Interval, b: Interval) -> bool:
    live = a.first <= b.last and b.first <= a.last
    memory = a.offset < b.offset + b.nbytes and b.offset < a.offset + a.nbytes
    return live and memory


@pytest.mark.parametrize("seed", range(20))
def test_random_plans_are_valid(seed: int) -> None:
    rng = np.random.default_rng(seed)
    intervals = []
    for _ in range(40):
        first = int(rng.integers(0, 30))
        last = first + int(rng.integers(0, 6))
        intervals.append(Interval(int(rng.integers(1, 5000)), first, last))
    size = plan_arena(intervals)
    for i, a in enumerate(intervals):
        assert a.offset % ALIGNMENT == 0
        assert a.offset + a.nbytes <= size
        for b in intervals[i + 1:]:
            assert not _overlaps(a, b)
    # Never worse than everything side by side, never better than the busiest step.
    peak = max(sum(-(-i.nbytes // ALIGNMENT) * ALIGNMENT for i in intervals
                   if i.first <= t <= i.last) for t in range(40))
    assert peak <= size <= sum(-(-i.nbytes // ALIGNMENT) * ALIGNMENT for i in intervals)


def test_chain_reuses_memory() -> None:
    # a -> b -> c -> d: only neighbours are alive together; two slots suffice.
    intervals = [Interval(1024, step, step + 1) for step in range(4)]
    assert plan_arena(intervals) == 2048
    assert intervals[0].offset == intervals[2].offset


def test_best_fit_takes_the_tightest_gap() -> None:
    x1, x2, x3 = Interval(1000, 0, 10), Interval(800, 0, 10), Interval(290, 0, 10)
    gap_large, gap_small = Interval(900, 0, 2), Interval(300, 0, 2)
    late = Interval(280, 5, 6)
    plan_arena([x1, gap_large, x2, gap_small, x3, late])
    # Once the early buffers die there are a 912-byte and a 304-byte hole: the tight one wins.
    assert late.offset == gap_small.offset
    assert gap_large.offset != gap_small.offset


def test_elementwise_results_reuse_their_input() -> None:
    program, _ = build_program(float_ops_graph())
    arena = [b for b in program.buffers() if b.kind == "arena"]
    # Sigmoid and Tanh read the Gemm result; Mul writes in place over the Concat result.
    tensors = {id(k.writes[0]): k for k in program.kernels}
    mul = next(k for k in program.kernels if k.func.startswith("tm_binary_mul"))
    assert mul.writes[0].buffer is mul.args[0].buffer
    assert len(arena) < len(tensors)


def test_reshape_is_free(cnn_models) -> None:
    program, _ = build_program(cnn_models["float"])
    funcs = [k.func for k in program.kernels]
    assert funcs == ["tm_conv2d_f32", "tm_conv2d_f32", "tm_maxpool_f32", "tm_gemm_f32"]
    # conv1 (8x8x8) and conv2 (16x8x8) outputs are alive together; pool fits in conv1's slot.
    assert program.arena_bytes == (8 + 16) * 64 * 4


def _conv_chain(convs: int = 3, channels: int = 4, size: int = 16) -> onnx.ModelProto:
    """x -> Conv -> Conv -> ... (3x3, same padding): every tensor is 4 KiB."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(convs):
        w = rng.normal(0, 0.3, (channels, channels, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == convs - 1 else f"c{i}"
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [out], pads=[1, 1, 1, 1]))
        prev = out
    shape = [1, channels, size, size]
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _assert_no_live_overlap(program: Program) -> None:
    placed = [b for b in program.buffers() if b.offset >= 0]
    for i, a in enumerate(placed):
        assert a.offset % ALIGNMENT == 0 and a.offset + a.nbytes <= program.arena_bytes
        for b in placed[i + 1:]:
            live = a.first <= b.last and b.first <= a.last
            memory = a.offset < b.offset + b.nbytes and b.offset < a.offset + a.nbytes
            assert not (live and memory), (a, b)


def test_model_input_space_is_reused_after_its_last_reader() -> None:
    arena, _ = build_program(_conv_chain(), io="arena")
    caller, _ = build_program(_conv_chain(), io="caller")
    tensor_bytes = 4 * 16 * 16 * 4
    x, y = arena.inputs[0].buffer, arena.outputs[0].buffer
    # The input lives from the start to the first convolution, the output to the end.
    assert (x.first, x.last) == (0, 0)
    assert (y.first, y.last) == (2, 2) == (y.first, len(arena.kernels) - 1)
    assert x.offset >= 0 and y.offset >= 0
    # Something written after the first convolution takes the input's bytes.
    reusers = [b for b in arena.buffers() if b is not x and b.first > x.last
               and b.offset < x.offset + x.nbytes and x.offset < b.offset + b.nbytes]
    assert reusers
    _assert_no_live_overlap(arena)
    # Two slots for everything, against two in the arena plus input and output outside.
    assert arena.arena_bytes == 2 * tensor_bytes and outside_bytes(arena) == 0
    assert caller.inputs[0].buffer.offset == caller.outputs[0].buffer.offset == -1
    assert caller.arena_bytes == 2 * tensor_bytes
    assert outside_bytes(caller) == 2 * tensor_bytes
    assert arena.arena_bytes + outside_bytes(arena) \
        == caller.arena_bytes + outside_bytes(caller) - 2 * tensor_bytes


def test_input_read_again_at_the_end_stays_live() -> None:
    # The residual block adds x back after two convolutions: x cannot be reused before.
    program, _ = build_program(residual_block(), io="arena")
    x = program.inputs[0].buffer
    readers = [step for step, k in enumerate(program.kernels)
               if any(getattr(a, "buffer", None) is x for a in k.reads)]
    assert x.first == 0 and x.last == max(readers) > 0
    _assert_no_live_overlap(program)


def test_every_buffer_of_quantized_and_float_cnns_is_disjoint_while_live(cnn_models) -> None:
    for kind in ("float", "int8", "uint8"):
        program, _ = build_program(cnn_models[kind], io="arena")
        caller, _ = build_program(cnn_models[kind], io="caller")
        _assert_no_live_overlap(program)
        assert all(t.buffer.offset >= 0 for t in [*program.inputs, *program.outputs])
        total = program.arena_bytes + outside_bytes(program)
        assert total < caller.arena_bytes + outside_bytes(caller)


def test_unknown_io_mode_is_refused() -> None:
    program, _ = build_program(_conv_chain(), io="caller")
    with pytest.raises(ValueError, match="io must be one of arena, caller"):
        plan_program(program, "heap")  # type: ignore[arg-type]
