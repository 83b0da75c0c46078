"""The embedded default: a synthetic STVG dataset written in the real raw formats (HC-STVG v1/v2, VidSTG).

`write_synthetic_dataset` writes the whole default (the `synthesize` stage); `make_clip` generates one clip;
`write_vidor_box_files` makes VidOR box files for real VidSTG sentence annotations.
"""

from cgstvg.data.synthetic.clip import Clip, make_clip
from cgstvg.data.synthetic.dataset import CLIP_SCHEMA, SPLITS, SynthesizeConfig, write_synthetic_dataset
from cgstvg.data.synthetic.hcstvg import hcstvg_fps, hcstvg_v1_record, hcstvg_v2_record
from cgstvg.data.synthetic.scene import ACTIONS, COLOURS, SHAPES, Scene, SceneConfig, SceneObject, clip_rngs, make_scene
from cgstvg.data.synthetic.video import write_mp4
from cgstvg.data.synthetic.vidor_boxes import vidor_box_json, write_vidor_box_files
from cgstvg.data.synthetic.vidstg import vidstg_records

__all__ = [
    "ACTIONS",
    "CLIP_SCHEMA",
    "COLOURS",
    "SHAPES",
    "SPLITS",
    "Clip",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "SynthesizeConfig",
    "clip_rngs",
    "hcstvg_fps",
    "hcstvg_v1_record",
    "hcstvg_v2_record",
    "make_clip",
    "make_scene",
    "vidor_box_json",
    "vidstg_records",
    "write_mp4",
    "write_synthetic_dataset",
    "write_vidor_box_files",
]
