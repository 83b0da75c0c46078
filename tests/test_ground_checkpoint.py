"""Grounding checkpoints in every layout the tool reads, and how the checkpoint's params drive the sampling."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch.optim.swa_utils import AveragedModel

from cgstvg.cli import main
from cgstvg.inference.checkpoint import GroundingParams, load_grounding_model, save_grounding_checkpoint
from cgstvg.inference.errors import CheckpointError
from cgstvg.inference.ground import ground
from ground_support import (
    SENTENCE,
    TINY_PARAMS,
    VIDEO_HW,
    make_checkpoint,
    make_tokenizer,
    make_video,
    release_state_dict,
    tiny_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ground_ckpt")
    tokenizer = make_tokenizer(d / "tokenizer")
    ckpt = make_checkpoint(d / "model.pt", tokenizer)
    video = make_video(d / "clip.mp4")
    reference = ground(load_grounding_model(ckpt), video, SENTENCE).to_json()
    return {"dir": d, "tokenizer": tokenizer, "ckpt": ckpt, "video": video, "reference": reference}


def _prediction(tube: dict) -> tuple:
    return tube["segment"], tube["boxes"], tube["sampling"]


def test_release_layout_goes_through_the_converter(files, fixtures_dir, tmp_path, capsys):
    ours = torch.load(files["ckpt"], weights_only=True)["model"]
    release = tmp_path / "release.pth"
    torch.save({"model": release_state_dict(ours, fixtures_dir / "head"), "iteration": 7}, release)
    args = ["ground", "--video", str(files["video"]), "--text", SENTENCE, "--checkpoint", str(release)]

    assert main(args) == 1  # the release carries no params
    err = capsys.readouterr().err.strip()
    assert str(release) in err and "carries no params" in err and "--params" in err and "release" in err

    params, out = tmp_path / "release.yaml", tmp_path / "tube.json"
    params.write_text(yaml.safe_dump(TINY_PARAMS))
    assert main([*args, "--params", str(params), "--tokenizer", str(files["tokenizer"]), "--out", str(out)]) == 0
    tube = json.loads(out.read_text())
    assert tube["checkpoint"]["layout"] == "release"
    assert _prediction(tube) == _prediction(files["reference"])  # the same weights under the authors' names

    other = {**TINY_PARAMS, "model": {**TINY_PARAMS["model"], "ffn_dim": 64}}
    params.write_text(yaml.safe_dump(other))
    assert main([*args, "--params", str(params), "--tokenizer", str(files["tokenizer"])]) == 1
    err = capsys.readouterr().err.strip()
    assert str(release) in err and "shapes differ" in err


def test_training_checkpoint_with_ema_and_params(files, tmp_path):
    model = tiny_model(files["tokenizer"])
    state = torch.load(files["ckpt"], weights_only=True)
    train_ckpt = tmp_path / "step_00000040.pt"
    # The `train` stage's layout: model, model_ema (an AveragedModel state dict), step, plus params and tokenizer.
    torch.save(
        {
            "step": 40,
            "model": {k: torch.zeros_like(v) for k, v in model.state_dict().items()},
            "model_ema": AveragedModel(model).state_dict(),
            "params": state["params"],
            "tokenizer": state["tokenizer"],
        },
        train_ckpt,
    )
    loaded = load_grounding_model(train_ckpt)
    assert loaded.checkpoint["step"] == 40 and loaded.checkpoint["layout"] == "cgstvg"
    tube = ground(loaded, files["video"], SENTENCE).to_json()
    assert _prediction(tube) == _prediction(files["reference"])  # the EMA weights, not the zeroed `model`


def test_safetensors_with_params_in_metadata(files, tmp_path):
    state = torch.load(files["ckpt"], weights_only=True)
    path = tmp_path / "model.safetensors"
    save_file(state["model"], path, metadata={"cgstvg_params": json.dumps(state["params"])})
    loaded = load_grounding_model(path, tokenizer_dir=files["tokenizer"])
    assert _prediction(ground(loaded, files["video"], SENTENCE).to_json()) == _prediction(files["reference"])
    with pytest.raises(CheckpointError, match="needs a tokenizer directory"):
        load_grounding_model(path)  # the random-weight text backbone needs its tokenizer


def test_params_from_a_whole_params_yaml():
    params_yaml = {
        "normalize": {"datasets": ["hcstvg_v1", "vidstg"]},
        "shard": {
            "policy": {"hcstvg_v1": "hcstvg", "vidstg": "vidstg"},
            "sampling": {"hcstvg_fps": 3.2, "vidstg_frames": 64, "fixed_frames": 64, "eval_multiplier": 2},
            "resize": {"mode": "release", "short_side": 420, "max_long_side": 700, "width_cap": 1.4},
        },
        "model": TINY_PARAMS["model"],
        "evaluate": {"protocol": "single_pass"},
    }
    first = GroundingParams.from_params_yaml(params_yaml)
    assert first.sampling["policy"] == "hcstvg" and first.protocol == "single_pass" and first.passes == 1
    vidstg = GroundingParams.from_params_yaml(params_yaml, dataset="vidstg", protocol="two_pass")
    assert vidstg.sampling["policy"] == "vidstg" and vidstg.sampling["vidstg_frames"] == 64 and vidstg.passes == 2
    assert vidstg.resize == params_yaml["shard"]["resize"]
    with pytest.raises(CheckpointError, match=r"shard.policy\['hcstvg_v2'\]"):
        GroundingParams.from_params_yaml(params_yaml, dataset="hcstvg_v2")


def _with_params(files, **changes):
    state = torch.load(files["ckpt"], weights_only=True)
    params = {**state["params"], **changes}
    return load_grounding_model(files["ckpt"], params=GroundingParams.from_dict(params, "test"))


def test_single_pass_samples_at_the_training_rate(files, tmp_path):
    tube = ground(_with_params(files, protocol="single_pass"), files["video"], SENTENCE).to_json()
    # 4 fps on an 8 fps video: every other frame of 0..22 (the rule drops the last frame), one pass.
    assert tube["sampling"]["passes"] == 1 and tube["sampling"]["frame_ids"] == list(range(0, 23, 2))
    assert [b["frame"] for b in tube["boxes"]] == list(
        range(tube["segment"]["start_frame"], tube["segment"]["end_frame_exclusive"])
    )


def test_long_videos_are_thinned_to_the_time_table(files, tmp_path):
    video = make_video(tmp_path / "long.mp4", frames=64)  # 63 sampled ids, more than 2 passes x 20 frames
    tube = ground(load_grounding_model(files["ckpt"]), video, SENTENCE).to_json()
    ids = tube["sampling"]["frame_ids"]
    assert tube["sampling"]["capped"] and len(ids) == 40 and ids[0] == 0 and ids[-1] == 62
    assert ids == sorted(set(ids))
    gaps = {b - a for a, b in zip(ids, ids[1:])}
    assert gaps <= {1, 2}  # evenly thinned


def test_boxes_over_the_frame_edge_are_clipped(files, tmp_path):
    model = tiny_model(files["tokenizer"])
    last = model.head.box_head.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.logit(torch.tensor([0.9, 0.9, 0.5, 0.5])))  # reaches 0.25 past the right/bottom
    state = torch.load(files["ckpt"], weights_only=True)
    path = save_grounding_checkpoint(tmp_path / "edge.pt", model.state_dict(), state["params"], files["tokenizer"])
    h, w = VIDEO_HW
    for box in ground(load_grounding_model(path), files["video"], SENTENCE).to_json()["boxes"]:
        assert box["box_xyxy"] == pytest.approx([0.65 * w, 0.65 * h, w, h], abs=1e-3)


def test_a_flipped_weight_byte_is_refused_naming_the_file(files, tmp_path):
    """torch's zip container does not notice changed tensor bytes; the recorded digest does."""
    data = bytearray(files["ckpt"].read_bytes())
    weight = load_grounding_model(files["ckpt"]).model.state_dict()["head.box_head.layers.0.weight"]
    at = data.find(weight.numpy().tobytes())
    assert at > 0  # stored uncompressed: the weight's bytes are in the file as they are in memory
    data[at + 5] ^= 0x10
    damaged = tmp_path / "model.pt"
    damaged.write_bytes(bytes(data))
    # the file still opens as a checkpoint: only the digest tells the weights changed
    assert not torch.equal(torch.load(damaged, weights_only=True)["model"]["head.box_head.layers.0.weight"], weight)
    with pytest.raises(CheckpointError, match=r"model\.pt: its weights, params or tokenizer hash to .* damaged"):
        load_grounding_model(damaged)


def test_the_digest_covers_params_and_tokenizer(files, tmp_path):
    state = torch.load(files["ckpt"], weights_only=True)
    assert len(state["digest"]) == 64
    for edit in ("params", "tokenizer"):
        changed = dict(state)
        if edit == "params":
            changed["params"] = {**state["params"], "protocol": "single_pass"}
        else:
            name = sorted(state["tokenizer"])[0]
            changed["tokenizer"] = {**state["tokenizer"], name: state["tokenizer"][name].flip(0)}
        torch.save(changed, tmp_path / f"{edit}.pt")
        with pytest.raises(CheckpointError, match="damaged"):
            load_grounding_model(tmp_path / f"{edit}.pt")
    undigested = {k: v for k, v in state.items() if k != "digest"}  # older checkpoints load as before
    torch.save(undigested, tmp_path / "old.pt")
    assert load_grounding_model(tmp_path / "old.pt").params == load_grounding_model(files["ckpt"]).params


def _vfr_video(path, pts_ms, size_hw=VIDEO_HW):
    """An H.264 mp4 whose frames are shown at the given times (ms): a variable frame rate."""
    from fractions import Fraction

    import av
    import numpy as np

    h, w = size_hw
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264")
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for i, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 60 + 4 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_times_come_from_the_frames_pts_on_a_variable_frame_rate_video(files, tmp_path):
    """The audit's case: a frame shown at 0.70 s was reported at 2.25 s (frame / average fps)."""
    pts_ms = [0, 100, 200, 300, 700, 800, 900, 1000] + [1500 + 100 * i for i in range(16)]
    video = _vfr_video(tmp_path / "vfr.mp4", pts_ms)
    tube = ground(load_grounding_model(files["ckpt"]), video, SENTENCE).to_json()
    for box in tube["boxes"]:
        assert box["time_s"] == pytest.approx(pts_ms[box["frame"]] / 1000, abs=1e-3)
    seg = tube["segment"]
    assert seg["start_s"] == pytest.approx(pts_ms[seg["start_frame"]] / 1000, abs=1e-3)
    end = seg["end_frame_exclusive"]
    assert seg["end_s"] == pytest.approx((pts_ms[end] if end < len(pts_ms) else pts_ms[-1] + 100) / 1000, abs=1e-3)
    assert tube["video"]["duration_s"] == pytest.approx(3.1, abs=1e-3)  # the last frame (3.0 s) ends at 3.1 s
    # on a constant-rate video the pts agree with frame / fps
    cfr = ground(load_grounding_model(files["ckpt"]), files["video"], SENTENCE).to_json()
    fps = cfr["video"]["fps"]
    assert all(b["time_s"] == pytest.approx(b["frame"] / fps, abs=1e-3) for b in cfr["boxes"])
