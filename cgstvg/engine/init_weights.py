"""`model.init.grounding`: load an MDETR-layout file into a model, as the release loads MODEL.WEIGHT.

Both `train` (every MDETR part: backbones, encoder, spatial decoder, box head) and `extract` (the backbones whose
features it caches when `train.input` is `features`) start from it, so cached features come from the same weights
that `train` would otherwise fine-tune.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cgstvg.model.convert import ConversionReport, load_mdetr_init


def init_grounding(model: torch.nn.Module, model_params: dict, tokenizer: Path | None) -> ConversionReport | None:
    """Load `model.init.grounding` if set (None: random weights, nothing loaded).

    A file written by `pretrain_grounding` comes with the tokenizer it was trained with; its token ids must be the
    ones the training tokenizer gives, or the text embeddings would be read under the wrong ids.
    """
    path = (model_params.get("init") or {}).get("grounding")
    if path is None:
        return None
    path = Path(path)
    report = load_mdetr_init(model, path)
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
                    "rerun `pretrain_grounding` (dvc repro) after changing the training sentences"
                )
    return report
