"""`model.init.grounding`: load an MDETR-layout file into a model, as the release loads MODEL.WEIGHT; then
`model.init.action_grounding`: the `pretrain_action_grounding` output over it (synthetic default only).

Both `train` (every MDETR part: backbones, encoder, spatial decoder, box head) and `extract` (the backbones whose
features it caches when `train.input` is `features`) start from them, so cached features come from the same weights
that `train` would otherwise fine-tune.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cgstvg.model.convert import ConversionReport, load_mdetr_init


def init_grounding(model: torch.nn.Module, model_params: dict, tokenizer: Path | None) -> ConversionReport | None:
    """Load `model.init.grounding`, then `model.init.action_grounding` over it, each if set (both None: random
    weights, nothing loaded, None returned).

    A file written by a pretrain stage comes with the tokenizer it was trained with; its token ids must be the
    ones the training tokenizer gives, or the text embeddings would be read under the wrong ids.
    """
    init = model_params.get("init") or {}
    path, action = init.get("grounding"), init.get("action_grounding")
    if path is None and action is None:
        return None
    report = ConversionReport()
    if path is not None:
        path = Path(path)
        report = load_mdetr_init(model, path)
        _check_tokenizer(path, tokenizer)
    if action is not None:
        for key in load_own_layout(model, Path(action)):
            report.mapped[f"{action}:{key}"] = key
        _check_tokenizer(Path(action), tokenizer)
    return report


def load_own_layout(model: torch.nn.Module, path: Path) -> list[str]:
    """Load `{"model": state}` in our own keys (a `pretrain_action_grounding` output) onto `model`; returns the keys.

    Every key must be one of the model's with the same shape: a file for other sizes (`model.enc_layers`, say) is
    refused, naming the first mismatches, rather than half-loaded.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (model.init.action_grounding; run `pretrain_action_grounding`)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model") if isinstance(state, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: expected {{'model': state dict}}")
    own = model.state_dict()
    bad = [f"{k} {tuple(v.shape)}" for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise ValueError(f"{path}: {len(bad)} tensors do not fit the model (model sizes changed?), e.g. {bad[:3]}")
    model.load_state_dict(state, strict=False)
    return sorted(state)


def _check_tokenizer(path: Path, tokenizer: Path | None) -> None:
    own = path.parent / "tokenizer"
    if own.is_dir():
        for name in ("vocab.json", "merges.txt"):
            if (
                tokenizer is None
                or not tokenizer.is_dir()
                or (own / name).read_bytes() != (tokenizer / name).read_bytes()
            ):
                raise ValueError(
                    f"{path}: its tokenizer ({own}) differs from the training one ({tokenizer}); "
                    "rerun the pretrain stages (dvc repro) after changing the training sentences"
                )
