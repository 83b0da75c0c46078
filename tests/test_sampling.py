"""Frame sampling rules and box/size mapping against hand-computed values."""

import pytest
import torch

from cgstvg.data.resize import normalized_cxcywh, resize_frames, resized_size, scale_boxes_xyxy
from cgstvg.data.sampling import fixed_frame_ids, hcstvg_frame_ids, sample_frame_ids, vidstg_frame_ids
from cgstvg.data.schema import sample_table
from cgstvg.data.shard_writer import ShardConfig, plan_sample, plan_split
from video_samples import sample_row

SAMPLING = {"hcstvg_fps": 3.2, "vidstg_frames": 64, "fixed_frames": 64, "eval_multiplier": 2}


def test_hcstvg_rule_keeps_frames_where_int_f_rate_increases():
    # rate 0.4: int(0.4 f) steps up at f = 3, 5, 8, 10, 13, 15, 18; frame 19 (the last) is dropped
    assert hcstvg_frame_ids(0, 19, video_fps=1.0, target_fps=0.4) == [0, 3, 5, 8, 10, 13, 15, 18]


def test_hcstvg_rule_appends_last_candidate_and_drops_last_video_frame():
    # rate 0.25 keeps 0, 4, 8, 12, 16; the last candidate 18 is appended; frame 19 never appears
    assert hcstvg_frame_ids(0, 19, video_fps=1.0, target_fps=0.25) == [0, 4, 8, 12, 16, 18]


def test_hcstvg_rule_on_a_real_sized_clip():
    # img_num 640 -> 32 fps; 3.2 fps keeps every 10th frame of 0..638, then 638 is appended: 65 frames
    ids = hcstvg_frame_ids(0, 639, video_fps=640 / 20, target_fps=3.2)
    assert ids == list(range(0, 631, 10)) + [638]
    dense = hcstvg_frame_ids(0, 639, video_fps=640 / 20, target_fps=6.4)
    assert dense == list(range(0, 636, 5)) + [638]


def test_vidstg_rule_linspace_inside_segment_and_every_frame_when_fewer():
    # linspace(0, 9, 6) = 0, 1.8, 3.6, 5.4, 7.2, 9 -> truncated 0, 1, 3, 5, 7, 9, offset by the segment start
    assert vidstg_frame_ids(10, 19, 6) == [10, 11, 13, 15, 17, 19]
    assert vidstg_frame_ids(10, 19, 4) == [10, 13, 16, 19]
    assert vidstg_frame_ids(5, 9, 64) == [5, 6, 7, 8, 9]


def test_fixed_rule_gives_exactly_n_bin_centres():
    assert fixed_frame_ids(0, 9, 4) == [1, 3, 6, 8]  # centres 1.25, 3.75, 6.25, 8.75
    assert fixed_frame_ids(0, 2, 6) == [0, 0, 1, 1, 2, 2]  # short segment: frames repeat
    assert len(fixed_frame_ids(100, 1000, 64)) == 64


def test_evaluation_splits_are_twice_as_dense():
    kw = {"fps": 32.0, "segment_start": 0, "segment_end": 639}
    assert len(sample_frame_ids(SAMPLING, policy="hcstvg", split="train", **kw)) == 65
    assert len(sample_frame_ids(SAMPLING, policy="hcstvg", split="test", **kw)) == 129
    assert len(sample_frame_ids(SAMPLING, policy="vidstg", split="train", **kw)) == 64
    assert len(sample_frame_ids(SAMPLING, policy="vidstg", split="val", **kw)) == 128
    assert len(sample_frame_ids(SAMPLING, policy="fixed", split="test", **kw)) == 128
    with pytest.raises(ValueError, match="unknown sampling policy"):
        sample_frame_ids(SAMPLING, policy="uniform", split="train", **kw)


def test_resize_rules():
    # aspect: 360x640 -> short side 420 would make the long side 747 > 700, so the long side becomes 700
    assert resized_size(360, 640, short_side=420, max_long_side=700) == (394, 700)
    assert resized_size(360, 640, short_side=420, max_long_side=800) == (420, 747)
    assert resized_size(640, 360, short_side=420, max_long_side=800) == (747, 420)  # portrait
    assert resized_size(96, 128, short_side=96, max_long_side=160) == (96, 128)
    # release: H = 420, W = min(int(420 w / h), int(420 * 1.4) = 588): 16:9 is squeezed, 4:3 is not
    assert resized_size(360, 640, short_side=420, max_long_side=0, mode="release") == (420, 588)
    assert resized_size(480, 640, short_side=420, max_long_side=0, mode="release") == (420, 560)


def test_resize_frames_is_antialiased_bilinear_and_identity_when_equal():
    frames = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    frames[..., ::2] = 200  # a 1-pixel stripe pattern: antialiased downscaling averages it to ~100
    small = resize_frames(frames, (4, 4))
    assert small.shape == (2, 3, 4, 4) and small.dtype == torch.uint8
    # interior columns average the stripes (plain bilinear would sample 0 or 200); borders see half a kernel
    assert (small[..., 1:3].int() - 100).abs().max() <= 1
    assert resize_frames(frames, (8, 8)) is frames


def test_box_mapping_to_resized_frames():
    box = torch.tensor([[64.0, 36.0, 320.0, 180.0]])  # in a 360x640 frame
    resized = scale_boxes_xyxy(box, (360, 640), (420, 588))  # the release's size for 16:9
    assert torch.allclose(resized, torch.tensor([[58.8, 42.0, 294.0, 210.0]]))
    assert torch.allclose(normalized_cxcywh(resized, (420, 588)), torch.tensor([[0.3, 0.3, 0.4, 0.4]]))
    assert torch.allclose(normalized_cxcywh(box, (360, 640)), torch.tensor([[0.3, 0.3, 0.4, 0.4]]))


def _config(**sampling) -> ShardConfig:
    return ShardConfig(
        policy={"hcstvg_v1": "hcstvg", "vidstg": "vidstg"},
        sampling={**SAMPLING, **sampling},
        short_side=96,
        max_long_side=160,
    )


def test_plan_keeps_boxes_of_the_sampled_frames_inside_the_tube():
    row = sample_row("a", "a.mp4", dataset="vidstg", frames=32, tube=(8, 20), width=64, height=48)
    meta = plan_sample(row, _config(vidstg_frames=4))
    assert meta["frame_ids"] == [0, 10, 20, 31]  # linspace(0, 31, 4) = 0, 10.3, 20.7, 31
    assert meta["gt_indices"] == [1, 2]  # frames 10 and 20 lie in the tube 8..20
    assert meta["boxes_xyxy"] == [row["boxes"][2], row["boxes"][12]]  # box of frame f is boxes[f - tube_start]
    assert meta["orig_size"] == [48, 64] and meta["size"] == [96, 128]
    x1, y1, x2, y2 = row["boxes"][2]
    assert meta["boxes_cxcywh"][0] == pytest.approx([(x1 + x2) / 128, (y1 + y2) / 96, (x2 - x1) / 64, (y2 - y1) / 48])
    assert meta["eval_passes"] == 1


def test_plan_rejects_bad_rows_with_the_record_named():
    row = sample_row("a", "a.mp4", tube=(8, 20))
    row["boxes"] = row["boxes"][:-1]
    with pytest.raises(ValueError, match=r"sample 'a' \(annos/train.json#a\): 12 boxes for a tube of 13 frames"):
        plan_sample(row, _config())
    with pytest.raises(ValueError, match="cannot contain '.'"):
        plan_sample(sample_row("a.1", "a.mp4"), _config())
    with pytest.raises(ValueError, match="duplicate sample_id 'b'"):
        plan_split(sample_table([sample_row("b", "x.mp4"), sample_row("b", "y.mp4")]), _config())
