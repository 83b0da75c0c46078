"""Stage `pretrain_grounding`: its data, its MDETR-layout output, and `train` loading it as an MDETR init."""

from __future__ import annotations

import copy
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from cgstvg.data.synthetic.grounding_frames import grounding_frames
from cgstvg.data.synthetic.scene import SceneConfig
from cgstvg.engine.init_weights import init_grounding
from cgstvg.engine.pretrain_grounding import PretrainSettings
from cgstvg.model.cgstvg import build_cgstvg
from cgstvg.model.convert import load_mdetr_init, to_mdetr_state_dict
from cgstvg.model.tokenizer import build_tokenizer
from pipeline import pretrain_grounding as stage

SCENE = SceneConfig(frames=8, height=48, width=64, radius=(4.0, 6.0))
SMALL_MODEL = {
    "backbones": {
        "appearance": {"name": "small_cnn", "channels": [8, 16, 16, 16]},
        "motion": {
            "embed_dim": 8,
            "depths": [1, 1],
            "num_heads": [1, 2],
            "patch_size": [1, 8, 8],
            "window_size": [2, 2, 2],
        },
        "text": {
            "tokenizer_vocab_size": 300,
            "hidden_size": 16,
            "num_layers": 1,
            "num_heads": 2,
            "intermediate_size": 32,
            "max_positions": 40,
        },
    },
    "d_model": 16,
    "heads": 2,
    "ffn_dim": 32,
    "enc_layers": 1,
    "dec_layers": 2,
    "context_heads": 2,
    "context_ffn_dim": 32,
}


def test_frames_are_deterministic_and_name_only_unique_objects():
    a = grounding_frames(0, "train", 6, 2, SCENE)
    b = grounding_frames(0, "train", 6, 2, SCENE)
    assert np.array_equal(a.frames, b.frames) and a.phrases == b.phrases and np.array_equal(a.boxes, b.boxes)
    assert a.frames.shape == (12, 48, 64, 3) and len(a) >= 12
    assert ((a.boxes > 0) & (a.boxes <= 1)).all()
    # Every frame has at least one named object, and every phrase names a colour and a shape.
    assert set(a.frame.tolist()) == set(range(12))
    assert all(any(c in p for c in ("red", "green", "blue", "yellow", "purple")) for p in a.phrases)
    val = grounding_frames(0, "val", 6, 2, SCENE)
    assert not np.array_equal(val.frames, a.frames)  # its own stream


def test_pool_frames_are_not_frames_of_the_stvg_clips():
    from cgstvg.data.synthetic.clip import make_clip

    pool = grounding_frames(0, "train", 3, 8, SCENE)
    assert len(pool.frames) > 0
    for split in ("train", "test"):
        for i in range(3):
            clip = make_clip(0, "hcstvg_v1", split, i, SCENE)
            assert not any(np.array_equal(f, g) for f in clip.frames for g in pool.frames)


def test_mdetr_layout_round_trips_through_the_mdetr_loader(tmp_path):
    tok = build_tokenizer(["the red square moves left", "a blue circle grows"], tmp_path / "tok", 300)
    torch.manual_seed(0)
    trained = build_cgstvg(SMALL_MODEL, tok)
    state, left_out = to_mdetr_state_dict(trained.state_dict())
    assert "backbone.0.body.stages.0.0.weight" in state or any(k.startswith("backbone.0.body.") for k in state)
    assert any(k.startswith("transformer.text_encoder.") for k in state)
    assert any(k.startswith("transformer.decoder.layers.1.") for k in state) and "bbox_embed.layers.0.weight" in state
    # MDETR has no motion stream, temporal decoder, temporal heads, instance context or encoder output norm: those
    # (and only those) are left out.
    assert any(k.startswith("motion.") for k in left_out) and any(
        k.startswith("head.temporal_decoder.") for k in left_out
    )
    mdetr_less = (
        "motion.",
        "head.temporal_decoder.",
        "head.time_table",
        "head.motion_proj.",
        "head.encoder.norm.",
        "head.icr.",
        "head.sted_head.",
        "head.actioness_head.",
    )
    assert all(k.startswith(mdetr_less) or ".context_attn." in k for k in left_out)
    path = tmp_path / "mdetr.pth"
    torch.save({"model": state}, path)
    torch.manual_seed(1)
    fresh = build_cgstvg(SMALL_MODEL, tok)
    report = load_mdetr_init(fresh, path)
    assert len(report.mapped) == len(state) and not report.dropped
    ours = fresh.state_dict()
    for key, value in trained.state_dict().items():
        if key not in left_out:
            assert torch.equal(ours[key], value), key
    assert not torch.equal(
        ours["head.temporal_decoder.layers.0.linear1.weight"],
        trained.state_dict()["head.temporal_decoder.layers.0.linear1.weight"],
    )


def test_mdetr_init_that_fits_nothing_is_refused(tmp_path):
    tok = build_tokenizer(["the red square moves left"], tmp_path / "tok", 300)
    model = build_cgstvg(SMALL_MODEL, tok)
    torch.save({"model": {"bbox_embed.layers.0.weight": torch.zeros(3, 3)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no weight of this MDETR-layout checkpoint fits"):
        load_mdetr_init(model, tmp_path / "other.pth")


def test_settings_refuse_unknown_keys_and_bad_values():
    with pytest.raises(KeyError, match="unknown keys \\['stpes'\\]"):
        PretrainSettings.from_params({"stpes": 3}, "params.yaml:pretrain_grounding")
    with pytest.raises(TypeError, match="steps"):
        PretrainSettings.from_params({"steps": "many"}, "params.yaml:pretrain_grounding")
    with pytest.raises(ValueError, match="frames"):
        PretrainSettings.from_params({"frames": 0}, "params.yaml:pretrain_grounding")


def _params(tmp_path, init: str | None) -> dict:
    synth = {"frames": 8, "height": 48, "width": 64, "radius": [4.0, 6.0]}
    return {
        "synthesize": synth,
        "model": {**copy.deepcopy(SMALL_MODEL), "init": {"grounding": init}},
        "pretrain_grounding": {
            "train_clips": 4,
            "val_clips": 2,
            "frames_per_clip": 2,
            "steps": 3,
            "frames": 4,
            "warmup_steps": 1,
            "eval_every": 2,
            "threads": 1,
            "model": {"context_mode": "none"},
        },
    }


def _normalized(tmp_path):
    folder = tmp_path / "normalize" / "hcstvg_v1"
    folder.mkdir(parents=True)
    sentences = ["the red square moves left", "a circle that is blue grows", "the green triangle goes up"]
    pq.write_table(pa.table({"sentence": sentences}), folder / "train.parquet")
    pq.write_table(pa.table({"sentence": ["a yellow disc falls"]}), folder / "test.parquet")
    return tmp_path / "normalize", sentences


def test_stage_trains_writes_mdetr_layout_and_train_loads_it(tmp_path):
    normalized, sentences = _normalized(tmp_path)
    out = tmp_path / "pretrain_grounding"
    params = _params(tmp_path, str(out / "mdetr.pth"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    argv = ["--normalized", str(normalized), "--out", str(out), "--params", str(tmp_path / "params.yaml")]
    summary = stage.main(argv)
    assert summary["trained"] and summary["steps"] == 3 and 0 <= summary["val_iou"] <= 1
    curve = (out / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,loss,lr") and len(curve) == 4
    first = (out / "mdetr.pth").read_bytes()
    stage.main(argv)  # deterministic: the same bytes again
    assert (out / "mdetr.pth").read_bytes() == first
    # The stage's tokenizer is the one extract builds from the same training sentences (test split excluded).
    extract_tok = build_tokenizer(sentences, tmp_path / "extract_tok", 300)
    for name in ("vocab.json", "merges.txt"):
        assert (out / "tokenizer" / name).read_bytes() == (extract_tok / name).read_bytes()
    model = build_cgstvg(params["model"], extract_tok)
    before = model.head.box_head.layers[0].weight.clone()
    init_grounding(model, params["model"], extract_tok)
    assert not torch.equal(before, model.head.box_head.layers[0].weight)
    # A training tokenizer other than the pretraining one is refused, naming both.
    other = build_tokenizer(sentences + ["a purple block expands"], tmp_path / "other_tok", 300)
    with pytest.raises(ValueError, match="tokenizer .* differs from the training one"):
        init_grounding(build_cgstvg(params["model"], other), params["model"], other)


def test_stage_trains_nothing_when_init_points_elsewhere(tmp_path):
    normalized, _ = _normalized(tmp_path)
    out = tmp_path / "pretrain_grounding"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(tmp_path, "data/mdetr_resnet101.pth")))
    summary = stage.main(
        ["--normalized", str(normalized), "--out", str(out), "--params", str(tmp_path / "params.yaml")]
    )
    assert not summary["trained"] and "data/mdetr_resnet101.pth" in summary["reason"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert json.loads((out / "summary.json").read_text())["trained"] is False
