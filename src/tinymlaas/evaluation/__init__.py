"""Metrics of an artifact: quality, fidelity to the original, size, compute, speed, memory."""
