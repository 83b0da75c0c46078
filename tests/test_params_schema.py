"""params.yaml is checked when it is loaded (issue 16, item 4): unknown sections and keys, wrong types and values out
of range are refused with one line naming the file and the dotted key; the schema cannot drift from the shipped
params.yaml or from the code's own constants."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
from pathlib import Path

import pytest
import yaml

from cgstvg.utils.params import load_params
from cgstvg.utils.params_schema import (
    MAX_REPORTED,
    SCHEMA,
    Names,
    ParamsError,
    Section,
    Spec,
    find_spec,
    validate_params,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "params.yaml"
RAW = yaml.safe_load(SHIPPED.read_text())


def _write(tmp_path: Path, params: dict, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _edited(edit) -> dict:
    params = copy.deepcopy(RAW)
    edit(params)
    return params


def _refusal(tmp_path: Path, params: dict) -> str:
    """The message `load_params` refuses `params` with (written to a file first, as a user's would be)."""
    path = _write(tmp_path, params)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert "\n" not in message, "the error must be one line"
    assert isinstance(info.value, ValueError)
    return message.replace(str(path), "<file>")


def test_the_shipped_params_validate_unchanged():
    assert load_params(SHIPPED) == RAW


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda p: p["train"].update(batchsize=64),
            "<file>:train: unknown key 'batchsize' (did you mean 'batch_size'?)",
        ),
        (lambda p: p.update(trian={"epochs": 1}), "<file>: unknown section 'trian' (did you mean 'train'?)"),
        (
            lambda p: p["train"].update(batch_size="eight"),
            "<file>:train.batch_size: expected an integer >= 1, got 'eight'",
        ),
        (lambda p: p["train"].update(batch_size=0), "<file>:train.batch_size: expected an integer >= 1, got 0"),
        (lambda p: p["train"].update(batch_size=-2), "<file>:train.batch_size: expected an integer >= 1, got -2"),
        (lambda p: p["train"].update(threads=0), "<file>:train.threads: expected an integer >= 1, got 0"),
        (lambda p: p["evaluate"].update(threads=0), "<file>:evaluate.threads: expected an integer >= 1, got 0"),
    ],
    ids=["typo", "top-level-typo", "word-for-int", "zero-batch", "negative-batch", "zero-threads", "eval-threads"],
)
def test_the_audit_examples_are_refused_with_one_line(tmp_path, edit, expected):
    assert _refusal(tmp_path, _edited(edit)) == expected


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # int: no floats (even integral ones), no booleans, no numeric strings; ranges
        (lambda p: p["train"].update(epochs=3.0), "train.epochs: expected an integer >= 1, got 3.0"),
        (lambda p: p["train"].update(workers=True), "train.workers: expected an integer >= 0, got true"),
        (lambda p: p["train"].update(workers=-1), "train.workers: expected an integer >= 0, got -1"),
        (lambda p: p["shard"].update(jpeg_quality=101), "shard.jpeg_quality: expected an integer in [1, 100], got 101"),
        (lambda p: p["synthesize"].update(width=63), "synthesize.width: expected an even integer >= 32, got 63"),
        # float: ints are fine, booleans and words are not; open and closed bounds
        (lambda p: p["train"]["optim"].update(lr="fast"), "train.optim.lr: expected a number >= 0, got 'fast'"),
        (lambda p: p["pretrain_grounding"].update(lr=0), "pretrain_grounding.lr: expected a number > 0, got 0"),
        (lambda p: p["shard"]["loader"].update(flip_prob=1.5), "shard.loader.flip_prob: expected a number in [0, 1]"),
        (lambda p: p["train"].update(ema_decay=False), "train.ema_decay: expected a number in [0, 1], got false"),
        (lambda p: p["model"].update(theta_t=float("nan")), "model.theta_t: expected a number, got nan"),
        # bool: the word or a number is not a boolean
        (lambda p: p["train"].update(amp="yes"), "train.amp: expected true or false, got 'yes'"),
        (lambda p: p["model"].update(dropout_on_logits=1), "model.dropout_on_logits: expected true or false, got 1"),
        # enum: the choices, and the closest one
        (
            lambda p: p["flows"].update(task_runner="thread"),
            "flows.task_runner: expected one of 'threads', 'processes', 'dask', got 'thread' (did you mean 'threads'?)",
        ),
        (lambda p: p["train"].update(device="gpu"), "train.device: expected one of 'auto', 'cpu', 'cuda', got 'gpu'"),
        # list: a list at all, its length, each item
        (
            lambda p: p["model"]["backbones"]["motion"].update(patch_size=[1, 8]),
            "model.backbones.motion.patch_size: expected a list of 3 integers >= 1, got 2 items [1, 8]",
        ),
        (
            lambda p: p["model"]["backbones"]["motion"].update(depths=[1, 0]),
            "model.backbones.motion.depths[1]: expected an integer >= 1, got 0",
        ),
        (
            lambda p: p["normalize"].update(datasets="vidstg"),
            "normalize.datasets: expected a non-empty list of strings among 'hcstvg_v1', 'hcstvg_v2', 'vidstg', "
            "got 'vidstg'",
        ),
        (
            lambda p: p["synthesize"].update(gt_fraction=[0.3, 1.0]),
            "synthesize.gt_fraction[1]: expected a number in (0, 1), got 1.0",
        ),
        # nullable: null only where the code takes it
        (lambda p: p["train"].update(epochs=None), "train.epochs: expected an integer >= 1, got null"),
        (lambda p: p["model"]["init"].update(grounding=3), "model.init.grounding: expected a string or null, got 3"),
        # nested: a typo deep down, a section that is not a mapping
        (
            lambda p: p["model"]["backbones"]["motion"].update(embed_dims=16),
            "model.backbones.motion: unknown key 'embed_dims' (did you mean 'embed_dim'?)",
        ),
        (
            lambda p: p["pretrain_motion"]["objects"].update(stpes=3),
            "pretrain_motion.objects: unknown key 'stpes' (did you mean 'steps'?)",
        ),
        (lambda p: p["shard"].update(resize=420), "shard.resize: expected a mapping, got 420"),
        (
            lambda p: p["synthesize"]["clips"]["vidstg"].update(dev=2),
            "synthesize.clips.vidstg: unknown split 'dev' (known: train, val, test)",
        ),
        (
            lambda p: p["model"]["loss"]["weights"].update(loss_box=5),
            "model.loss.weights: unknown loss term 'loss_box' (did you mean 'loss_bbox'?)",
        ),
        (
            lambda p: p["pretrain_grounding"]["model"].update(context_mod="none"),
            "pretrain_grounding.model: unknown model key 'context_mod' (did you mean 'context_mode'?)",
        ),
    ],
)
def test_wrong_types_and_ranges_name_the_key(tmp_path, edit, expected):
    assert _refusal(tmp_path, _edited(edit)).startswith(f"<file>:{expected}")


def test_keys_of_the_other_appearance_backbone_are_refused(tmp_path):
    resnet = _edited(lambda p: p["model"]["backbones"]["appearance"].update(name="resnet101"))
    assert _refusal(tmp_path, resnet) == (
        "<file>:model.backbones.appearance.channels: applies to small_cnn only, not to name 'resnet101'; "
        "<file>:model.backbones.appearance.coord_channels: applies to small_cnn only, not to name 'resnet101'"
    )
    resnet["model"]["backbones"]["appearance"] = {"name": "resnet101", "last_layer": "layer3", "frame_chunk": 8}
    assert validate_params(resnet)["model"]["backbones"]["appearance"]["last_layer"] == "layer3"
    small = _edited(lambda p: p["model"]["backbones"]["appearance"].update(fold_batchnorm=True))
    assert "fold_batchnorm: applies to the ResNets only" in _refusal(tmp_path, small)


def test_free_form_mappings_take_new_names():
    params = _edited(
        lambda p: (
            p["flows"]["sweep"].update(
                my_variant=["model.context_mode=none", "train.epochs=2", "+train.progress=true"]
            ),
            p["flows"]["retries"].update(evaluate=3),
            p["flows"].update(fanout=["shard", "my_stage"]),
            p["train"]["optim"]["groups"].update(spatial_head={"prefixes": ["head.spatial."], "lr": 1.0e-4}),
        )
    )
    checked = validate_params(params)
    assert checked["flows"]["sweep"]["my_variant"] == [
        "model.context_mode=none",
        "train.epochs=2",
        "+train.progress=true",
    ]
    assert checked["train"]["optim"]["groups"]["spatial_head"]["lr"] == 1.0e-4


def test_free_form_entries_are_still_checked(tmp_path):
    typo = _edited(lambda p: p["flows"]["sweep"].update(v=["model.contex_mode=none"]))
    assert _refusal(tmp_path, typo) == (
        "<file>:flows.sweep.v[0]: override 'model.contex_mode=none': model has no key 'contex_mode' "
        "(did you mean 'context_mode'?)"
    )
    no_value = _edited(lambda p: p["flows"]["sweep"].update(v="model.context_mode=none"))
    assert "flows.sweep.v: expected a list of `key=value` overrides" in _refusal(tmp_path, no_value)
    group = _edited(lambda p: p["train"]["optim"]["groups"].update(g={"prefixes": [], "lr": 1.0e-3}))
    assert "<file>:train.optim.groups.g.prefixes: expected a non-empty list of strings" in _refusal(tmp_path, group)
    rest = _edited(lambda p: p["train"]["optim"]["groups"].update(rest={"prefixes": ["a."], "lr": 1.0e-3}))
    assert "<file>:train.optim.groups.rest: 'rest' is implicit" in _refusal(tmp_path, rest)
    retries = _edited(lambda p: p["flows"]["retries"].update(train=-1))
    assert "<file>:flows.retries.train: expected an integer >= 0, got -1" in _refusal(tmp_path, retries)


def test_a_partial_file_loads_and_missing_keys_are_not_errors(tmp_path):
    path = _write(tmp_path, {"normalize": {"datasets": ["vidstg"]}, "train": {"batch_size": 4}, "flows": {}})
    assert load_params(path) == {"normalize": {"datasets": ["vidstg"]}, "train": {"batch_size": 4}, "flows": {}}
    objects_skipped = {"pretrain_motion": {"steps": 3, "objects": {"steps": 0}}, "model": {"init": None}}
    assert load_params(_write(tmp_path, objects_skipped)) == objects_skipped


def test_every_problem_is_reported_in_one_message(tmp_path):
    several = _edited(lambda p: (p["train"].update(batch_size=0, epochs="6"), p.update(trian={})))
    assert _refusal(tmp_path, several) == (
        "<file>:train.epochs: expected an integer >= 1, got '6'; "
        "<file>:train.batch_size: expected an integer >= 1, got 0; "
        "<file>: unknown section 'trian' (did you mean 'train'?)"
    )
    many = _edited(lambda p: p["evaluate"].update({f"extra_{i}": i for i in range(MAX_REPORTED + 3)}))
    message = _refusal(tmp_path, many)
    assert message.count("; ") == MAX_REPORTED - 1 and message.endswith(" (and 3 more)")


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path):
    (tmp_path / "params.yaml").write_text("- train\n")
    with pytest.raises(ParamsError, match="params.yaml: expected a mapping at the top level, got list"):
        load_params(tmp_path / "params.yaml")


def test_yaml_1_1_exponents_are_numbers(tmp_path):
    """PyYAML reads `1e-5` (no dot) as a string; DVC reads it as a number and `dvc exp run -S lr=1e-5` writes it."""
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  optim:\n    lr: 1e-5\npretrain_motion:\n  bias_lr: 3E-2\n")
    assert yaml.safe_load(path.read_text())["train"]["optim"]["lr"] == "1e-5"
    params = load_params(path)
    assert params["train"]["optim"]["lr"] == 1e-5 and params["pretrain_motion"]["bias_lr"] == 0.03
    path.write_text("train:\n  epochs: 1e3\n")  # an integer key takes no exponent
    with pytest.raises(ParamsError, match="train.epochs: expected an integer >= 1, got '1e3'"):
        load_params(path)


def test_dvc_set_param_edits_still_validate(tmp_path):
    """`dvc exp run -S` (and flows.sweep's variants) only change values: the edited file still loads."""
    hydra = pytest.importorskip("dvc.utils.hydra")
    for name, overrides in RAW["flows"]["sweep"].items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(SHIPPED.read_text())
        hydra.apply_overrides(path, overrides)
        assert load_params(path)["model"]["context_mode"] == overrides[0].split("=")[1]
    path = tmp_path / "edited.yaml"
    path.write_text(SHIPPED.read_text())
    hydra.apply_overrides(path, ["train.optim.lr=1e-5", "train.batch_size=16", "model.init.grounding=null"])
    params = load_params(path)
    assert params["train"]["optim"]["lr"] == 1e-5 and params["train"]["batch_size"] == 16
    assert params["model"]["init"]["grounding"] is None


def test_every_sweep_override_names_a_params_key():
    for overrides in RAW["flows"]["sweep"].values():
        for override in overrides:
            spec, why = find_spec(override.split("=")[0])
            assert spec is not None, why
    assert find_spec("train.batchsize")[1] == "train has no key 'batchsize' (did you mean 'batch_size'?)"
    assert find_spec("trian.epochs")[1] == "params.yaml has no section 'trian' (did you mean 'train'?)"


# ------------------------------------------------------------------------------------------------ no drift


def _schema_paths(spec: Spec, prefix: str, required: bool) -> set[str]:
    """Dotted keys the schema knows (required=False) or the shipped file must set (required=True); `*` stands
    for a user-chosen name."""
    out: set[str] = set()
    if isinstance(spec, Names):
        return _schema_paths(spec.value, f"{prefix}.*", required)
    if not isinstance(spec, Section) or (required and not spec.complete):
        return out
    for key, sub in {**spec.fields, **({} if required else spec.extras)}.items():
        path = f"{prefix}.{key}" if prefix else key
        out |= {path} | _schema_paths(sub, path, required)
    return out


def _file_paths(value, spec: Spec | None, prefix: str) -> set[str]:
    out: set[str] = set()
    if isinstance(spec, Names) and isinstance(value, dict):
        for item in value.values():
            out |= _file_paths(item, spec.value, f"{prefix}.*")
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            sub = spec.spec(key) if isinstance(spec, Section) else None
            out |= {path} | _file_paths(item, sub, path)
    return out


def _extras(spec: Spec, prefix: str = "") -> set[str]:
    if isinstance(spec, Names):
        return _extras(spec.value, f"{prefix}.*")
    if not isinstance(spec, Section):
        return set()
    out = {f"{prefix}.{k}" if prefix else k for k in spec.extras}
    for key, sub in spec.fields.items():
        out |= _extras(sub, f"{prefix}.{key}" if prefix else key)
    return out


def test_the_schema_and_the_shipped_params_yaml_have_the_same_keys():
    in_file = _file_paths(RAW, SCHEMA, "")
    assert in_file - _schema_paths(SCHEMA, "", required=False) == set(), "keys of params.yaml the schema lacks"
    assert _schema_paths(SCHEMA, "", required=True) - in_file == set(), "schema keys missing from params.yaml"
    assert _extras(SCHEMA) & in_file == set(), "params.yaml sets a key the schema calls an extra: move it to fields"
    assert {"model.backbones.appearance.last_layer", "train.progress", "synthesize.radius"} <= _extras(SCHEMA)


def test_the_schema_repeats_the_codes_constants():
    from cgstvg.data import resize, sampling, schema
    from cgstvg.data.synthetic.dataset import SPLITS
    from cgstvg.engine import frozen_backbones, optim, train_loop
    from cgstvg.evaluation import metrics, protocol
    from cgstvg.model import appearance, config, criterion, motion, tokenizer
    from cgstvg.utils import params_schema as s
    from flows import settings

    assert s.DATASETS == schema.DATASETS and s.SYNTHETIC_SPLITS == SPLITS and s.POLICIES == sampling.POLICIES
    assert s.RESIZE_MODES == resize.RESIZE_MODES and s.TASK_RUNNERS == settings.TASK_RUNNERS
    assert s.APPEARANCE_NAMES == ("small_cnn", *appearance.RESNETS) and s.ATTENTIONS == motion.ATTENTIONS
    assert s.TOKENIZER_MIN_VOCAB == 256 + len(tokenizer.SPECIAL_TOKENS) + 1
    assert s.LOSS_NAMES == criterion.LOSS_NAMES and s.DECAYS == optim.DECAYS
    assert s.AMP_DTYPES == tuple(train_loop.AMP_DTYPES) and s.INPUT_MODES == frozen_backbones.INPUT_MODES
    assert s.TEST_PROTOCOLS == tuple(protocol.TEST_PROTOCOLS) and s.METRIC_PROTOCOLS == metrics.METRIC_PROTOCOLS
    assert s.MODEL_CHOICES == {
        "icg_pooling": config.ICG_POOLING,
        "context_mode": config.CONTEXT_MODES,
        "score_fusion": config.SCORE_FUSIONS,
        "threshold_mode": config.THRESHOLD_MODES,
        "temporal_score_layer": config.TEMPORAL_SCORE_LAYERS,
        "train_selection": config.TRAIN_SELECTIONS,
        "query_init": config.QUERY_INITS,
        "box_refine": config.BOX_REFINES,
    }


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _arguments(fn) -> set[str]:
    return set(inspect.signature(fn).parameters) - {"self"}


def test_the_schema_has_the_keys_the_code_reads():
    from cgstvg.data.synthetic.dataset import SynthesizeConfig
    from cgstvg.data.synthetic.scene import SceneConfig
    from cgstvg.engine.pretrain_action_grounding import ActionPretrainSettings
    from cgstvg.engine.pretrain_grounding import PretrainSettings
    from cgstvg.engine.pretrain_motion import MotionPretrainSettings
    from cgstvg.model.appearance import ResNetTrunk, SmallConvNet
    from cgstvg.model.config import CGSTVGConfig
    from cgstvg.model.criterion import CGSTVGCriterion
    from cgstvg.model.motion import VideoSwinBackbone
    from cgstvg.utils import params_schema as s
    from flows.settings import FlowSettings, Torchrun
    from pipeline import pretrain_action_grounding, pretrain_grounding, pretrain_motion

    def keys(section: Section) -> set[str]:
        return set(section.fields) | set(section.extras)

    assert keys(s.SYNTHESIZE) == _fields(SceneConfig) | _fields(SynthesizeConfig) - {"scene"}
    assert set(s.MODEL_HEAD) == _fields(CGSTVGConfig) - {"appearance_dim", "motion_dim", "text_dim"}  # backbones'
    assert keys(s.MODEL.fields["loss"]) == _arguments(CGSTVGCriterion.__init__)
    assert keys(s.APPEARANCE) == _arguments(SmallConvNet.__init__) | _arguments(ResNetTrunk.__init__)
    assert keys(s.MOTION) == _arguments(VideoSwinBackbone.__init__)
    assert keys(s.PRETRAIN_GROUNDING) == _fields(PretrainSettings) | set(pretrain_grounding.DATA_KEYS)
    assert keys(s.PRETRAIN_MOTION) == _fields(MotionPretrainSettings) | set(pretrain_motion.DATA_KEYS)
    assert keys(s.PRETRAIN_ACTION_GROUNDING) == _fields(ActionPretrainSettings) | set(
        pretrain_action_grounding.DATA_KEYS
    )
    objects = s.PRETRAIN_MOTION.fields["objects"]
    assert isinstance(objects, Section)
    assert keys(objects) == _fields(MotionPretrainSettings) | {"train_clips", "val_clips", "window"}
    assert keys(s.FLOWS) == _fields(FlowSettings) and keys(s.FLOWS.fields["torchrun"]) == _fields(Torchrun)


# ------------------------------------------------------------------------------------------------ who checks


def test_a_stage_refuses_a_bad_file_before_doing_work(tmp_path):
    from pipeline import synthesize

    params = _write(tmp_path, {"synthesize": {**RAW["synthesize"], "frame": 16}})
    out = tmp_path / "out"
    with pytest.raises(ParamsError, match=r"params.yaml:synthesize: unknown key 'frame' \(did you mean 'frames'\?\)"):
        synthesize.main(["--out", str(out), "--params", str(params), "--no-progress"])
    assert not out.exists()


def test_the_flows_and_the_cli_refuse_a_bad_file(tmp_path):
    from cgstvg.inference.checkpoint import load_params_file
    from cgstvg.inference.errors import GroundingError
    from flows.settings import load_flow_settings

    _write(tmp_path, _edited(lambda p: p["flows"].update(chunk_size=0)))
    with pytest.raises(ParamsError, match="params.yaml:flows.chunk_size: expected an integer >= 1, got 0"):
        load_flow_settings(tmp_path)
    whole = _write(tmp_path, _edited(lambda p: p["shard"]["resize"].update(short_sid=420)), "whole.yaml")
    with pytest.raises(GroundingError, match=r"whole.yaml:shard.resize: unknown key 'short_sid'"):
        load_params_file(whole)  # `cgstvg ground --params whole.yaml` prints this as its one error line


@pytest.mark.parametrize("stage", ["synthesize", "train"])
def test_a_stage_refuses_a_bad_params_file_in_one_line(tmp_path, stage):
    """Run as DVC runs it: exit 1, one stderr line naming the stage, the file and the key, no traceback."""
    import subprocess
    import sys

    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"train": {"batchsize": 64}}))
    args = {"synthesize": ["--out", str(tmp_path / "o")], "train": ["--shards", "s", "--features", "f", "--out", "o"]}
    run = subprocess.run(
        [sys.executable, "-m", f"pipeline.{stage}", *args[stage], "--params", str(bad)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "CGSTVG_DEBUG": ""},
    )
    assert run.returncode == 1
    assert run.stderr.strip() == f"{stage}: {bad}:train: unknown key 'batchsize' (did you mean 'batch_size'?)"
    assert not (tmp_path / "o").exists()
