"""Evaluation protocol helpers: pass splitting, merging and box interpolation (model-independent)."""

from cgstvg.evaluation.interpolate import interpolate_boxes
from cgstvg.evaluation.protocol import (
    PROTOCOLS,
    PassPrediction,
    TubePrediction,
    interleaved_passes,
    merge_passes,
    run_protocol,
)

__all__ = [
    "PROTOCOLS",
    "PassPrediction",
    "TubePrediction",
    "interleaved_passes",
    "interpolate_boxes",
    "merge_passes",
    "run_protocol",
]
