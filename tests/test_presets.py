"""Presets as files (conf/*.yaml): schema-checked, selectable with `cgstvg preset`, the README table generated from
them, and usable as `cgstvg ground|evaluate --params`."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import shutil
import stat

import pytest
import torch
import yaml

from cgstvg.cli import main
from cgstvg.inference.checkpoint import load_params_file
from cgstvg.inference.evaluate import checkpoint_params
from cgstvg.model.cgstvg import build_cgstvg, head_config
from cgstvg.model.config import RELEASE_CONFIG
from cgstvg.model.convert import convert_official_state_dict
from cgstvg.model.motion import VideoSwinBackbone
from cgstvg.model.text import ROBERTA_BASE, TextEncoder
from cgstvg.presets import SHIPPED, apply_preset, leaf_keys, load_preset, preset_table
from cgstvg.utils.params import load_params
from ground_support import make_tokenizer, make_video
from pipeline_support import REPO

CONF = REPO / "conf"
RELEASE = ("hcstvg_v1", "hcstvg_v2", "vidstg")
TABLE_BEGIN, TABLE_END = "<!-- preset-table: begin", "<!-- preset-table: end -->"
# The release's thresholds per dataset (experiments/*.yaml: TEMP_THETA, SPAT_THETA, SPAT_GT_THETA).
THRESHOLDS = {"hcstvg_v1": (0.5, 0.8, 0.8), "hcstvg_v2": (0.5, 0.8, 0.7), "vidstg": (-0.5, 0.5, 0.5)}


def _leaves(name: str) -> dict:
    return leaf_keys(load_preset(CONF / f"{name}.yaml"))


def test_shipped_presets_validate_and_set_the_same_keys():
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(SHIPPED)
    keys = {name: set(_leaves(name)) for name in SHIPPED}
    assert all(k == keys["cpu"] for k in keys.values()), {n: k ^ keys["cpu"] for n, k in keys.items()}


def test_the_cpu_preset_is_the_shipped_params_yaml():
    shipped = leaf_keys(load_params(REPO / "params.yaml"))
    cpu = _leaves("cpu")
    assert {k: shipped.get(k) for k in cpu} == cpu


@pytest.mark.parametrize("name", RELEASE)
def test_release_presets_describe_the_released_model(name):
    model = load_preset(CONF / f"{name}.yaml")["model"]
    theta_t, theta_s, theta_s_gt = THRESHOLDS[name]
    expected = dataclasses.replace(RELEASE_CONFIG, theta_t=theta_t, theta_s=theta_s, theta_s_gt=theta_s_gt)
    assert head_config(model) == expected
    swin = inspect.signature(VideoSwinBackbone).parameters
    motion = model["backbones"]["motion"]
    for key in ("embed_dim", "depths", "num_heads", "patch_size", "window_size"):
        value = tuple(motion[key]) if isinstance(motion[key], list) else motion[key]
        assert value == swin[key].default, key
    text = model["backbones"]["text"]
    assert (text["hidden_size"], text["num_layers"], text["num_heads"], text["intermediate_size"]) == tuple(
        ROBERTA_BASE[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    )
    assert text["max_positions"] == ROBERTA_BASE["max_position_embeddings"]
    assert model["backbones"]["appearance"]["name"] == "resnet101"


def test_release_presets_build_the_released_checkpoints_layout(tmp_path):
    # The full model of conf/hcstvg_v1.yaml, on the meta device (no memory), against the 1608 entries of the
    # released hcstvg.pth converted by cgstvg.model.convert: what `cgstvg evaluate` loads strictly.
    keys = json.loads(
        (REPO.parent / "shared" / "fixtures" / "official" / "keys" / "full_state_dict_keys.json").read_text()
    )
    official = {k: torch.empty(s, dtype=getattr(torch, d), device="meta") for k, s, d, _ in keys["entries"]}
    converted, _ = convert_official_state_dict(official)
    params, _ = checkpoint_params(load_params_file(CONF / "hcstvg_v1.yaml"), None)
    model = copy.deepcopy(params.model)
    model["backbones"]["text"]["vocab_size"] = ROBERTA_BASE["vocab_size"]  # roberta-base's; a tiny tokenizer here
    with torch.device("meta"):
        built = build_cgstvg(model, make_tokenizer(tmp_path / "tokenizer"))
    shapes = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in converted.items()}


@pytest.mark.parametrize("name", RELEASE)
def test_a_preset_read_alone_is_the_params_yaml_it_selects(name, tmp_path):
    # `--params conf/<name>.yaml` (the file alone: the modules' defaults fill the rest) and `--params params.yaml`
    # after `cgstvg preset <name>` build the same model.
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    apply_preset(CONF / f"{name}.yaml", params)
    selected = load_params(params)["model"]
    alone = load_preset(CONF / f"{name}.yaml")["model"]
    assert head_config(selected) == head_config(alone)
    defaults = {
        "motion": inspect.signature(VideoSwinBackbone).parameters,
        "text": {**inspect.signature(TextEncoder).parameters, **inspect.signature(TextEncoder.from_config).parameters},
    }
    for part, signature in defaults.items():
        for key, value in selected["backbones"][part].items():
            if key in alone["backbones"][part] or key == "tokenizer_vocab_size":  # read by build_tokenizer only
                continue
            default = signature[key].default
            assert (tuple(value) if isinstance(value, list) else value) == default, (part, key)
    assert selected["backbones"]["appearance"] == alone["backbones"]["appearance"]


def test_readme_table_is_generated_from_the_presets():
    readme = (REPO / "README.md").read_text()
    begin = readme.index(TABLE_BEGIN)
    begin = readme.index("\n", begin) + 1
    end = readme.index(TABLE_END)
    assert readme[begin:end] == preset_table(CONF), "regenerate it: cgstvg preset --table"


def test_selecting_a_preset_and_back_keeps_comments_and_values(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    params.chmod(0o644)
    original = params.read_text()
    assert main(["preset", "hcstvg_v1", "--params", str(params), "--dir", str(CONF), "--dry-run"]) == 0
    assert "would change" in capsys.readouterr().out and params.read_text() == original

    assert main(["preset", "hcstvg_v1", "--params", str(params), "--dir", str(CONF)]) == 0
    out = capsys.readouterr().out
    assert "model.d_model" in out and "train.epochs" in out
    selected = load_params(params)  # validates
    assert {k: v for k, v in leaf_keys(selected).items() if k in _leaves("hcstvg_v1")} == _leaves("hcstvg_v1")
    text = params.read_text()
    for line in original.splitlines():  # the comments of keys that the preset does not set are kept
        if line.startswith(("# Every knob", "  seed: 2021", "  eos_coef: 0.3")):
            assert line in text, line
    assert "      channels:" not in text  # the appearance section is exactly the preset's (no small-CNN keys)
    assert stat.S_IMODE(params.stat().st_mode) == 0o644

    for name in ("vidstg", "hcstvg_v2", "cpu"):
        assert apply_preset(CONF / f"{name}.yaml", params)
    assert yaml.safe_load(params.read_text()) == yaml.safe_load(original)
    assert apply_preset(CONF / "cpu.yaml", params) == []


def test_unknown_keys_in_a_preset_are_refused_naming_file_and_key(tmp_path, capsys):
    bad = tmp_path / "mine.yaml"
    bad.write_text("model:\n  d_modle: 256\ntrian:\n  epochs: 3\n")
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    assert main(["preset", str(bad), "--params", str(params)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cgstvg preset: error: ")
    assert f"{bad}:model: unknown key 'd_modle' (did you mean 'd_model'?)" in err
    assert f"{bad}: unknown section 'trian' (did you mean 'train'?)" in err
    assert params.read_text() == (REPO / "params.yaml").read_text()
    assert main(["preset", "hcstvg_v3", "--dir", str(CONF)]) == 1
    err = capsys.readouterr().err
    assert "hcstvg_v3.yaml: no such preset" in err and "hcstvg_v1" in err


@pytest.mark.parametrize("name", SHIPPED)
def test_presets_load_as_ground_params(name):
    params = load_params_file(CONF / f"{name}.yaml")
    dataset = load_preset(CONF / f"{name}.yaml")["normalize"]["datasets"][0]
    assert params.sampling["policy"] == ("vidstg" if dataset == "vidstg" else "hcstvg")
    if name != "cpu":
        assert params.protocol == "two_pass" and params.resize["short_side"] == 420
        loading, tokenizer = checkpoint_params(params, None)
        # a checkpoint brings the RoBERTa weights: the pretrained directory serves as the tokenizer only
        assert loading.model["backbones"]["text"]["pretrained_dir"] is None
        assert tokenizer == params.model["backbones"]["text"]["pretrained_dir"]
        assert checkpoint_params(params, "roberta-base/")[1] == "roberta-base/"


def test_ground_takes_a_preset_as_params(tmp_path, capsys):
    video = make_video(tmp_path / "clip.mp4")
    args = ["ground", "--video", str(video), "--text", "a man sits down", "--checkpoint", str(tmp_path / "x.pth")]
    assert main([*args, "--params", str(CONF / "hcstvg_v1.yaml"), "--tokenizer", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "x.pth: checkpoint not found" in err  # past the params: the preset validated and assembled
    bad = tmp_path / "preset.yaml"
    bad.write_text((CONF / "hcstvg_v1.yaml").read_text().replace("  d_model: 256", "  d_model: 256\n  d_modl: 2"))
    assert main([*args, "--params", str(bad)]) == 1
    assert f"{bad}:model: unknown key 'd_modl'" in capsys.readouterr().err
