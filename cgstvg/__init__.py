"""CG-STVG: context-guided spatio-temporal video grounding (CVPR 2024), a faithful and lean re-implementation."""

__version__ = "0.1.0"
