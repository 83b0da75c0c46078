"""Evaluation protocol helpers: pass splitting, merging and box interpolation (model-independent)."""

from cgstvg.evaluation.interpolate import interpolate_boxes
from cgstvg.evaluation.protocol import (
    TEST_PROTOCOLS,
    PassPrediction,
    TubePrediction,
    interleaved_passes,
    merge_passes,
    run_protocol,
)

__all__ = [
    "TEST_PROTOCOLS",
    "PassPrediction",
    "TubePrediction",
    "interleaved_passes",
    "interpolate_boxes",
    "merge_passes",
    "run_protocol",
]
