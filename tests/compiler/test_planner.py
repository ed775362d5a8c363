"""The arena planner: no two live buffers overlap, and memory is reused."""

from __future__ import annotations

import numpy as np
import pytest
from graphs import float_ops_graph

from tinymlaas.compiler import build_program
from tinymlaas.compiler.planner import ALIGNMENT, Interval, plan_arena


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
