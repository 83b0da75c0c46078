"""Evaluation: the test protocols (`protocol`, `interpolate`), the metrics (`metrics`), the evaluation loop
(`evaluate_loop`) and the trivial baselines (`baselines`).

The package namespace holds the protocol helpers only, so that `cgstvg ground` and training load no more of it.
"""

from cgstvg.evaluation.interpolate import interpolate_boxes
from cgstvg.evaluation.protocol import (
    TEST_PROTOCOLS,
    PassPrediction,
    TubePrediction,
    interleaved_passes,
    merge_passes,
    pass_predictions,
    predict_passes,
    run_protocol,
)

__all__ = [
    "TEST_PROTOCOLS",
    "PassPrediction",
    "TubePrediction",
    "interleaved_passes",
    "interpolate_boxes",
    "merge_passes",
    "pass_predictions",
    "predict_passes",
    "run_protocol",
]
