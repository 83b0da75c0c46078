"""The schema of `params.yaml`: every section and key, its type and its range, declared once.

`validate_params(params, path)` checks a loaded file against `SCHEMA` and raises one `ParamsError` (a ValueError)
listing every problem, each as `<file>:<dotted.key>: <what is wrong>`:

    params.yaml:train: unknown key 'batchsize' (did you mean 'batch_size'?)
    params.yaml:train.batch_size: expected an integer >= 1, got 'eight'

Unknown keys are errors at every level, top-level sections included; missing keys are not (partial files are
fine; a stage that needs a key raises its own error naming the section). Ints are never bools and never floats
(3.0 is not an integer); a float key takes ints too. One YAML quirk is repaired instead of refused: PyYAML (YAML 1.1)
reads `1e-4` without a dot as a string, while DVC (YAML 1.2, and what `dvc exp run -S lr=1e-5` writes) reads it as a
number; float keys take such strings and `validate_params` returns them as floats.

The schema imports nothing from the rest of the package (every stage's dvc.yaml deps list `cgstvg/utils`, not the
modules the choices come from), so the allowed choices repeat the code's constants; tests/test_params_schema.py
checks that they agree, and that every key of the shipped params.yaml is here and every key here is in it (except
`extras`: keys the code accepts that the shipped file does not set, e.g. the ResNet appearance options).
"""

from __future__ import annotations

import abc
import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_REPORTED = 10  # problems spelled out in one message; the rest are counted

Problems = list[tuple[str, str]]  # (dotted path, message)


class ParamsError(ValueError):
    """A params file that does not fit the schema; `problems` holds one `<file>:<key>: <message>` per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        shown = "; ".join(self.problems[:MAX_REPORTED])
        more = len(self.problems) - MAX_REPORTED
        super().__init__(shown + (f" (and {more} more)" if more > 0 else ""))


def _show(value: Any) -> str:
    """A value as the error quotes it: YAML words for null and booleans, repr otherwise (shortened)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _range(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    """' >= 1', ' in [0, 1]', ' > 0', ... ('' without bounds)."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


class Spec(abc.ABC):
    """One value's type; `check` appends (path, message) problems and returns the value (normalised)."""

    nullable: bool = False

    @abc.abstractmethod
    def describe(self, plural: bool = False) -> str:
        """What the value must be, e.g. 'an integer' ('integers' when `plural`)."""

    def expected(self) -> str:
        return self.describe() + (" or null" if self.nullable else "")

    def check(self, value: Any, path: str, problems: Problems) -> Any:
        if value is None:
            if not self.nullable:
                problems.append((path, f"expected {self.describe()}, got null"))
            return value
        return self._check(value, path, problems)

    @abc.abstractmethod
    def _check(self, value: Any, path: str, problems: Problems) -> Any:
        """The check of a non-null value."""

    def _wrong(self, value: Any, path: str, problems: Problems) -> Any:
        problems.append((path, f"expected {self.expected()}, got {_show(value)}"))
        return value


@dataclass(frozen=True)
class Int(Spec):
    min: int | None = None
    max: int | None = None
    even: bool = False
    nullable: bool = False

    def describe(self, plural: bool = False) -> str:
        even = "even " if self.even else ""
        kind = f"{even}integers" if plural else f"an {even}integer"
        return kind + _range(self.min, self.max)

    def _check(self, value: Any, path: str, problems: Problems) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (self.min is not None and value < self.min)
            or (self.max is not None and value > self.max)
            or (self.even and value % 2)
        ):
            return self._wrong(value, path, problems)
        return value


_YAML11_EXPONENT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")


@dataclass(frozen=True)
class Float(Spec):
    """A finite number (ints too). `min_open`/`max_open`: the bound itself is excluded."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    nullable: bool = False

    def describe(self, plural: bool = False) -> str:
        return ("numbers" if plural else "a number") + _range(self.min, self.max, self.min_open, self.max_open)

    def _check(self, value: Any, path: str, problems: Problems) -> Any:
        if isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
            value = float(value)  # `1e-4`: a string to PyYAML, a number to DVC and to the person who wrote it
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return self._wrong(value, path, problems)
        low_bad = self.min is not None and (value <= self.min if self.min_open else value < self.min)
        high_bad = self.max is not None and (value >= self.max if self.max_open else value > self.max)
        return self._wrong(value, path, problems) if low_bad or high_bad else value


@dataclass(frozen=True)
class Bool(Spec):
    nullable: bool = False

    def describe(self, plural: bool = False) -> str:
        return "true or false"

    def _check(self, value: Any, path: str, problems: Problems) -> Any:
        return value if isinstance(value, bool) else self._wrong(value, path, problems)


@dataclass(frozen=True)
class Str(Spec):
    nullable: bool = False

    def describe(self, plural: bool = False) -> str:
        return "strings" if plural else "a string"

    def _check(self, value: Any, path: str, problems: Problems) -> Any:
        return value if isinstance(value, str) else self._wrong(value, path, problems)


@dataclass(frozen=True)
class Enum(Spec):
    choices: tuple[str, ...]
    nullable: bool = False

    def describe(self, plural: bool = False) -> str:
        listed = ", ".join(repr(c) for c in self.choices)
        return f"strings among {listed}" if plural else f"one of {listed}"

    def _check(self, value: Any, path: str, problems: Problems) -> Any:
        if value in self.choices and isinstance(value, str):
            return value
        close = difflib.get_close_matches(value, self.choices, n=1) if isinstance(value, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append((path, f"expected {self.expected()}, got {_show(value)}{hint}"))
        return value


@dataclass(frozen=True)
class List(Spec):
    item: Spec
    length: int | None = None  # exactly this many items
    min_length: int = 0
    nullable: bool = False

    def describe(self, plural: bool = False) -> str:
        count = f"{self.length} " if self.length is not None else ""
        empty = "non-empty " if self.min_length > 0 and self.length is None else ""
        return f"{'lists' if plural else 'a ' + empty + 'list'} of {count}{self.item.describe(plural=True)}"

    def _check(self, value: Any, path: str, problems: Problems) -> Any:
        if not isinstance(value, list):
            return self._wrong(value, path, problems)
        if (self.length is not None and len(value) != self.length) or len(value) < self.min_length:
            problems.append((path, f"expected {self.expected()}, got {len(value)} items {_show(value)}"))
            return value
        return [self.item.check(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]


def _hint(key: Any, known: list[str]) -> str:
    """' (did you mean 'x'?)' for a close match, else the known names when they are few."""
    close = difflib.get_close_matches(key, known, n=1) if isinstance(key, str) else []
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known: {', '.join(known)})" if len(known) <= 12 else ""


def _unknown(key: Any, known: list[str], noun: str) -> str:
    return f"unknown {noun} {_show(key)}{_hint(key, known)}"


@dataclass(frozen=True)
class Section(Spec):
    """A mapping with fixed keys. `extras`: keys the code accepts that the shipped params.yaml does not set.
    `complete=False`: the shipped file sets only some keys (the drift test does not ask for the others).
    `rule(mapping, path) -> problems`: a check across keys (run when the keys themselves are fine)."""

    fields: dict[str, Spec]
    extras: dict[str, Spec] = field(default_factory=dict)
    noun: str = "key"
    nullable: bool = False
    complete: bool = True
    rule: Callable[[dict, str], Problems] | None = None

    def describe(self, plural: bool = False) -> str:
        return "mappings" if plural else "a mapping"

    def spec(self, key: Any) -> Spec | None:
        return self.fields[key] if key in self.fields else self.extras.get(key)

    def _check(self, value: Any, path: str, problems: Problems) -> Any:
        if not isinstance(value, dict):
            return self._wrong(value, path, problems)
        before = len(problems)
        out = {}
        known = [*self.fields, *self.extras]
        for key, item in value.items():
            spec = self.spec(key)
            if spec is None:
                problems.append((path, _unknown(key, known, self.noun)))
                out[key] = item
            else:
                out[key] = spec.check(item, _join(path, key), problems)
        if self.rule is not None and len(problems) == before:
            problems.extend(self.rule(out, path))
        return out


@dataclass(frozen=True)
class Names(Spec):
    """A mapping whose keys are names the user chooses (sweep variants, parameter groups); each value is `value`."""

    value: Spec
    reserved: dict[str, str] = field(default_factory=dict)  # name -> why it cannot be used
    nullable: bool = False

    def describe(self, plural: bool = False) -> str:
        return "mappings of names" if plural else "a mapping of names"

    def _check(self, value: Any, path: str, problems: Problems) -> Any:
        if not isinstance(value, dict):
            return self._wrong(value, path, problems)
        for name, why in self.reserved.items():
            if name in value:
                problems.append((_join(path, name), why))
        return {k: self.value.check(v, _join(path, k), problems) for k, v in value.items()}


def find_spec(dotted: str, root: Spec | None = None) -> tuple[Spec | None, str]:
    """The spec of a dotted key (`model.context_mode`), or None and why not (naming a close match if any)."""
    spec: Spec | None = SCHEMA if root is None else root
    done: list[str] = []
    for part in dotted.split("."):
        where = ".".join(done) or "params.yaml"
        if isinstance(spec, Names):
            spec = spec.value
        elif isinstance(spec, Section):
            known = [*spec.fields, *spec.extras]
            spec = spec.spec(part)
            if spec is None:
                return None, f"{where} has no {'section' if not done else 'key'} {part!r}{_hint(part, known)}"
        else:
            return None, f"{where} is not a mapping"
        done.append(part)
    return spec, ""


@dataclass(frozen=True)
class Override(Spec):
    """A `key=value` override (Hydra syntax, as `dvc exp run -S` takes); the key must name a params key."""

    nullable: bool = False

    def describe(self, plural: bool = False) -> str:
        return "`key=value` overrides" if plural else "a `key=value` override"

    def _check(self, value: Any, path: str, problems: Problems) -> Any:
        if not isinstance(value, str) or "=" not in value:
            return self._wrong(value, path, problems)
        key = value.split("=", 1)[0].strip().lstrip("+~")
        spec, why = find_spec(key)
        if spec is None:
            problems.append((path, f"override {value!r}: {why}"))
        return value


# ------------------------------------------------------------------------------------------------ allowed choices
# Each repeats a constant of the code (tests/test_params_schema.py checks that they agree).

DATASETS = ("hcstvg_v1", "hcstvg_v2", "vidstg")  # cgstvg.data.schema.DATASETS
SYNTHETIC_SPLITS = {"hcstvg_v1": ("train", "test"), "hcstvg_v2": ("train", "val"), "vidstg": ("train", "val", "test")}
POLICIES = ("hcstvg", "vidstg", "fixed")  # cgstvg.data.sampling.POLICIES
RESIZE_MODES = ("aspect", "release")  # cgstvg.data.resize.RESIZE_MODES
DEVICES = ("auto", "cpu", "cuda")  # cgstvg.engine.distributed.init_distributed
TASK_RUNNERS = ("threads", "processes", "dask")  # flows.settings.TASK_RUNNERS
APPEARANCE_NAMES = ("small_cnn", "resnet18", "resnet34", "resnet50", "resnet101")  # cgstvg.model.appearance
RESNET_LAYERS = ("layer3", "layer4")
ATTENTIONS = ("torchvision", "sdpa")  # cgstvg.model.motion.ATTENTIONS
TOKENIZER_MIN_VOCAB = 256 + 5 + 1  # cgstvg.model.tokenizer: above the 256 bytes and the 5 special tokens
MODEL_CHOICES = {  # cgstvg.model.config
    "icg_pooling": ("mean", "roi_align"),
    "context_mode": ("none", "all", "temporal", "spatial", "both"),
    "score_fusion": ("two_level", "sum", "product"),
    "threshold_mode": ("release", "paper"),
    "temporal_score_layer": ("last", "stage"),
    "train_selection": ("gt_giou", "confidence"),
    "query_init": ("zeros", "text"),
    "box_refine": ("absolute", "anchor"),
}
LOSS_NAMES = ("loss_bbox", "loss_giou", "loss_sted", "loss_actioness", "loss_conf")  # cgstvg.model.criterion
DECAYS = ("step", "linear")  # cgstvg.engine.optim.DECAYS
AMP_DTYPES = ("bfloat16", "float16")  # cgstvg.engine.train_loop.AMP_DTYPES
INPUT_MODES = ("frames", "features")  # cgstvg.engine.frozen_backbones.INPUT_MODES
TEST_PROTOCOLS = ("two_pass", "single_pass")  # cgstvg.evaluation.protocol.TEST_PROTOCOLS
METRIC_PROTOCOLS = ("release", "strict")  # cgstvg.evaluation.metrics.METRIC_PROTOCOLS

# ------------------------------------------------------------------------------------------------ the schema

COUNT = Int(min=1)  # steps, sizes, batch sizes, threads, clips
NONNEG = Int(min=0)  # seeds, warm-up steps, optional counts where 0 means "none"
PROB = Float(min=0, max=1)
LR = Float(min=0, min_open=True)
PATH = Str(nullable=True)

BASE = Section({"seed": NONNEG})

SYNTHESIZE = Section(
    {
        "seed": NONNEG,
        "frames": Int(min=8),
        "height": Int(min=32, even=True),
        "width": Int(min=32, even=True),
        "clips": Section(
            {d: Section({s: NONNEG for s in splits}, noun="split") for d, splits in SYNTHETIC_SPLITS.items()},
            noun="dataset",
        ),
        "crf": Int(min=0, max=51),
        "vidstg_fps": LR,
        "min_objects": Int(min=1, max=4),
        "max_objects": Int(min=1, max=4),
        "gt_fraction": List(Float(min=0, max=1, min_open=True, max_open=True), length=2),
        "p_same_colour": PROB,
        "p_same_shape": PROB,
        "p_distractor_action": PROB,
        "p_same_action": PROB,
        "p_decoy": PROB,
    },
    extras={  # cgstvg.data.synthetic.scene.SceneConfig
        "colour_jitter": NONNEG,
        "radius": List(Float(min=0, min_open=True), length=2),
        "grow_factor": Float(min=1),
    },
)

NORMALIZE = Section({"raw_root": Str(), "datasets": List(Enum(DATASETS), min_length=1)})

SHARD = Section(
    {
        "policy": Section({d: Enum(POLICIES) for d in DATASETS}, noun="dataset"),
        "sampling": Section(
            {"hcstvg_fps": LR, "vidstg_frames": COUNT, "fixed_frames": COUNT, "eval_multiplier": COUNT}
        ),
        "resize": Section({"mode": Enum(RESIZE_MODES), "short_side": COUNT, "max_long_side": COUNT, "width_cap": LR}),
        "jpeg_quality": Int(min=1, max=100),
        "shards": Section({"max_samples": COUNT, "max_bytes": COUNT, "min_shards": COUNT}),
        "workers": NONNEG,  # 0: decode in the stage's own process
        "loader": Section(
            {
                "shuffle_buffer": NONNEG,
                "flip_prob": PROB,
                "temporal_crop_prob": PROB,
                "train_scales": List(COUNT),
                "max_long_side": COUNT,
            }
        ),
    }
)

FLOWS = Section(
    {
        "baseline": Str(),
        "retries": Names(NONNEG, nullable=True),
        "retry_backoff_s": Float(min=0),
        "fanout": List(Str(), nullable=True),
        "task_runner": Enum(TASK_RUNNERS),
        "workers": COUNT,
        "chunk_size": COUNT,
        "dask_address": Str(nullable=True),
        "torchrun": Section(
            {"nproc_per_node": COUNT, "nnodes": COUNT, "rdzv_endpoint": Str()},
            nullable=True,
        ),
        "sweep": Names(List(Override()), nullable=True),
    }
)


SMALL_CNN_KEYS = ("channels", "coord_channels")
RESNET_KEYS = ("last_layer", "trainable", "channels_last", "fold_batchnorm")


def _appearance_rule(cfg: dict, path: str) -> Problems:
    """The small CNN and the ResNets take different keys (cgstvg.model.appearance.build_appearance)."""
    name = cfg.get("name")
    if name is None:
        return []
    wrong, kind = (RESNET_KEYS, "the ResNets") if name == "small_cnn" else (SMALL_CNN_KEYS, "small_cnn")
    return [(_join(path, k), f"applies to {kind} only, not to name {name!r}") for k in cfg if k in wrong]


APPEARANCE = Section(
    {
        "name": Enum(APPEARANCE_NAMES),
        "channels": List(COUNT, min_length=1),
        "coord_channels": Bool(),
        "frame_chunk": NONNEG,  # 0: all frames at once
    },
    extras={  # the ResNet options (cgstvg.model.appearance.ResNetTrunk)
        "last_layer": Enum(RESNET_LAYERS),
        **{k: Bool() for k in RESNET_KEYS if k != "last_layer"},
    },
    rule=_appearance_rule,
)

MOTION = Section(
    {
        "embed_dim": COUNT,
        "depths": List(COUNT, min_length=1),
        "num_heads": List(COUNT, min_length=1),
        "patch_size": List(COUNT, length=3),
        "window_size": List(COUNT, length=3),
        "stochastic_depth_prob": PROB,
        "drop_path_in_train": Bool(),
        "attention": Enum(ATTENTIONS),
        "attention_chunk": COUNT,
    }
)

TEXT = Section(
    {
        "pretrained_dir": PATH,
        "tokenizer_vocab_size": Int(min=TOKENIZER_MIN_VOCAB),
        "hidden_size": COUNT,
        "num_layers": COUNT,
        "num_heads": COUNT,
        "intermediate_size": COUNT,
        "max_positions": Int(min=3),  # <s>, </s> and at least one token
        "dropout": PROB,
        "lower_case": Bool(),
        "trainable": Bool(),
    },
    extras={"vocab_size": COUNT},  # cgstvg.model.text.TextEncoder.from_config (default: the tokenizer's)
)

MODEL_HEAD: dict[str, Spec] = {  # cgstvg.model.config.CGSTVGConfig
    "d_model": Int(min=2, even=True),
    "heads": COUNT,
    "ffn_dim": COUNT,
    "enc_layers": COUNT,
    "dec_layers": COUNT,
    "context_heads": COUNT,
    "context_ffn_dim": COUNT,
    "max_video_len": COUNT,
    "dropout": PROB,
    "head_dropout": PROB,
    "dropout_on_logits": Bool(),
    "icg_pooling": Enum(MODEL_CHOICES["icg_pooling"]),
    "roi_align_output_size": COUNT,
    "roi_align_sampling_ratio": Int(),  # <= 0: torchvision's adaptive sampling
    "context_mode": Enum(MODEL_CHOICES["context_mode"]),
    "score_fusion": Enum(MODEL_CHOICES["score_fusion"]),
    "threshold_mode": Enum(MODEL_CHOICES["threshold_mode"]),
    "theta_t": Float(),  # a logit (release) or a probability (paper)
    "theta_s": Float(),
    "theta_s_gt": Float(),  # a GIoU threshold; negative selects non-GT frames too
    "temporal_score_layer": Enum(MODEL_CHOICES["temporal_score_layer"]),
    "train_selection": Enum(MODEL_CHOICES["train_selection"]),
    "context_in_temporal": Bool(),
    "query_init": Enum(MODEL_CHOICES["query_init"]),
    "box_refine": Enum(MODEL_CHOICES["box_refine"]),
    "spatial_key_padding_mask": Bool(),
    "frames_cls_over_padding": Bool(),
}

MODEL = Section(
    {
        "init": Section({"grounding": PATH, "action_grounding": PATH, "motion": PATH}, nullable=True),
        "backbones": Section({"appearance": APPEARANCE, "motion": MOTION, "text": TEXT}),
        **MODEL_HEAD,
        "loss": Section(
            {
                "weights": Section({n: Float(min=0) for n in LOSS_NAMES}, noun="loss term"),
                "eos_coef": Float(min=0),
                "sigma": LR,
                "aux_loss": Bool(),
                "conf_target_detach": Bool(),
            }
        ),
    }
)

PRETRAIN_GROUNDING = Section(
    {
        "train_clips": COUNT,
        "val_clips": COUNT,
        "frames_per_clip": COUNT,
        "steps": COUNT,
        "frames": COUNT,
        "lr": LR,
        "weight_decay": Float(min=0),
        "warmup_steps": NONNEG,
        "grad_clip": LR,
        "loss_bbox": Float(min=0),
        "loss_giou": Float(min=0),
        "eval_every": COUNT,
        "seed": NONNEG,
        "threads": COUNT,
        # `model` keys overridden while pretraining: the head's (the backbones are what it trains)
        "model": Section(MODEL_HEAD, nullable=True, complete=False, noun="model key"),
    }
)

PRETRAIN_ACTION_GROUNDING = Section(
    {
        "train_clips": COUNT,
        "val_clips": COUNT,
        "frames_per_clip": COUNT,
        "p_positive": PROB,
        "steps": COUNT,
        "frames": COUNT,
        "lr": LR,
        "weight_decay": Float(min=0),
        "warmup_steps": NONNEG,
        "grad_clip": LR,
        "loss_bbox": Float(min=0),
        "loss_giou": Float(min=0),
        "loss_actioness": Float(min=0),
        "eval_every": COUNT,
        "seed": NONNEG,
        "threads": COUNT,
        "model": Section(MODEL_HEAD, nullable=True, complete=False, noun="model key"),
    }
)


def _motion_settings(steps: Int) -> dict[str, Spec]:
    """The keys of cgstvg.engine.pretrain_motion.MotionPretrainSettings and the data keys of a phase."""
    return {
        "train_clips": COUNT,
        "val_clips": COUNT,
        "window": COUNT,
        "steps": steps,
        "batch": COUNT,
        "lr": LR,
        "bias_lr": LR,
        "weight_decay": Float(min=0),
        "warmup_steps": NONNEG,
        "grad_clip": LR,
        "eval_every": COUNT,
        "seed": NONNEG,
    }


PRETRAIN_MOTION = Section(
    {
        **_motion_settings(COUNT),
        "threads": COUNT,
        "objects": Section(_motion_settings(NONNEG), nullable=True),  # steps 0 skips the phase
    }
)

EXTRACT = Section({"device": Enum(DEVICES), "amp": Bool(), "batch_frames": COUNT, "threads": COUNT})

GROUP = Section({"prefixes": List(Str(), min_length=1), "lr": Float(min=0), "warmup": Bool(), "decay": Enum(DECAYS)})

TRAIN = Section(
    {
        "dataset": Enum(DATASETS),
        "split": Str(),
        "input": Enum(INPUT_MODES),
        "epochs": COUNT,
        "batch_size": COUNT,
        "threads": COUNT,
        "device": Enum(DEVICES),
        "workers": NONNEG,  # 0: load in the training process
        "optim": Section(
            {
                "lr": Float(min=0),  # 0 is allowed, as by the optimizer: the group does not move
                "weight_decay": Float(min=0),
                "rest_warmup": Bool(),
                "rest_decay": Enum(DECAYS),
                "groups": Names(
                    GROUP,
                    reserved={"rest": "'rest' is implicit (the parameters no group takes; set optim.lr instead)"},
                    nullable=True,
                ),
            }
        ),
        "schedule": Section(
            {"warmup_fraction": PROB, "milestones_epochs": List(Float(min=0)), "gamma": Float(min=0, min_open=True)}
        ),
        "grad_clip": Float(min=0),  # 0 disables clipping
        "ema_decay": PROB,
        "amp": Bool(),
        "amp_dtype": Enum(AMP_DTYPES),
        "checkpoint_every": COUNT,
        "keep_checkpoints": COUNT,
        "log_every": COUNT,
        "memory": Section(  # cgstvg.model.memory_savers.MemorySavers
            {"checkpoint_appearance_frames": NONNEG, "checkpoint_encoder": Bool(), "checkpoint_decoder": Bool()}
        ),
        "validation": Section({"every": NONNEG, "split": Str(), "samples": COUNT}),  # every 0: no validation
    },
    extras={"progress": Bool()},  # the progress bar (default: when stderr is a terminal)
)

EVALUATE = Section(
    {
        "split": Str(),
        "protocol": Enum(TEST_PROTOCOLS),
        "metric_protocol": Enum(METRIC_PROTOCOLS),
        "batch_size": COUNT,
        "threads": COUNT,
        "device": Enum(DEVICES),
        "amp": Bool(),
        "renders": NONNEG,
    }
)

SCHEMA = Section(
    {
        "base": BASE,
        "synthesize": SYNTHESIZE,
        "normalize": NORMALIZE,
        "shard": SHARD,
        "flows": FLOWS,
        "model": MODEL,
        "pretrain_grounding": PRETRAIN_GROUNDING,
        "pretrain_action_grounding": PRETRAIN_ACTION_GROUNDING,
        "pretrain_motion": PRETRAIN_MOTION,
        "extract": EXTRACT,
        "train": TRAIN,
        "evaluate": EVALUATE,
    },
    noun="section",
)


def validate_params(params: dict[str, Any], path: Any = "params.yaml") -> dict[str, Any]:
    """`params` checked against `SCHEMA` (float keys written `1e-4` become floats); raises `ParamsError` naming
    `path` and the dotted key of every problem."""
    problems: Problems = []
    checked = SCHEMA.check(params, "", problems)
    if problems:
        raise ParamsError([f"{path}:{key}: {message}" if key else f"{path}: {message}" for key, message in problems])
    return checked


__all__ = ["SCHEMA", "ParamsError", "Spec", "find_spec", "validate_params"]
