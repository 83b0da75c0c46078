"""Grounding new videos with a trained checkpoint.

`checkpoint` (the checkpoint contract, loading any layout), `video` (decord decoding and checks), `ground` (one
video and sentence -> a tube, optionally rendered), `batch` (CSV / JSONL of pairs -> JSON lines), `errors`.
Nothing is re-exported here, so that a light import (e.g. `cgstvg.inference.video` for the command line's input
checks) does not pull in the model and transformers.
"""
