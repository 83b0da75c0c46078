"""The numerical tolerances of the tests, each derived from what is compared.

A comparison is one of two kinds:
* **bit-exact** (`torch.equal`, `atol=0`): the same code runs the same ops on the same inputs in one process, so the
  same kernels run in the same order; or the values are integers, booleans or exactly representable.
* **float32 rounding of an op chain** (`chain_atol`): two computations of the same maths whose kernels may differ:
  the authors' code against ours, or the fixture's machine against this one. The fixtures were computed on the
  authors' machine; here vectorised kernels (scalar, AVX2, AVX-512: `ATEN_CPU_CAPABILITY`), GEMM blocking
  (oneDNN, MKL), the thread count and the C library's exp/sin variants change the summation order and the
  transcendental approximations. No machine shows every variant, so the bound is argued, not measured.

Decisions taken from such values (a threshold, an argmax) are compared exactly only where `decision_margin`
shows that no value lies within the tolerance of the boundary, so the decision cannot flip under rounding.
"""

from __future__ import annotations

import math

import torch

# Float32 unit roundoff: one rounding of a basic operation has relative error <= 2**-24.
EPS = 2.0**-24


def chain_atol(
    reference: torch.Tensor, depth: int, width: int, confidence: float = 1.0, scale_floor: float = 1.0
) -> float:
    """Absolute tolerance for a float32 tensor that `depth` sequential layers compute, each layer's outputs being
    reductions (dot products, sums, softmax, LayerNorm) of at most `width` terms.

    A reduction of K terms in another order (another kernel, blocking or thread split) differs by rounding that
    behaves as a random walk: relative to the scale of its terms it is at most lambda sqrt(K) eps, with
    lambda ~ 1 holding with overwhelming probability (Higham and Mary, "A new approach to probabilistic rounding
    error analysis", SISC 2019; the worst-case K eps bound is never approached by real kernels). Each layer adds
    its own such error and the normalisations (LayerNorm, softmax) keep the activations at their scale, so over
    the chain the errors add in quadrature: sqrt(depth * width) eps relative to the tensor's scale. The scale is
    max |reference| but at least 1, the size of the normalised activations every layer starts from (a small
    output still carries the absolute error of its larger inputs); gradients, which have no such floor, pass
    `scale_floor=0`. `confidence` multiplies lambda.
    """
    scale = max(scale_floor, float(reference.detach().abs().max())) if reference.numel() else scale_floor
    return confidence * math.sqrt(depth * width) * EPS * scale


def decision_margin(values: torch.Tensor, boundary: float) -> float:
    """Smallest distance of `values` to the decision `boundary` (inf if there are none)."""
    return float((values.detach().float() - boundary).abs().min()) if values.numel() else math.inf


def argmax_margin(scores: torch.Tensor) -> float:
    """Gap between the best and the second-best entry of a flat score tensor."""
    top = scores.detach().float().flatten().topk(2).values
    return float(top[0] - top[1])
