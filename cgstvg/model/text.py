"""Text backbone: a `transformers` RoBERTa and its tokenizer, loaded from LOCAL directories only.

The release encodes the lower-cased sentences of a batch with RoBERTa-base (padding 'longest') and passes
`last_hidden_state` plus a key-padding mask to the grounding head (whose FeatureResizer maps the width to d).
The pooler is computed by the release but never used, so it is not built here (`add_pooling_layer=False`;
the converter drops its keys). State-dict keys: `model.<RobertaModel key>`, e.g.
`model.encoder.layer.0.attention.self.query.weight` (= the release's `text_encoder.body.<key>`).

Two ways to build it:
* `TextEncoder.from_pretrained(model_dir, tokenizer_dir)`: pretrained weights from a local directory (for
  example a saved `roberta-base`); nothing is downloaded (`local_files_only=True`, and HF_HUB_OFFLINE=1).
* `TextEncoder.from_config(tokenizer_dir, ...)`: random weights of a chosen size, with the vocabulary of a
  tokenizer directory (e.g. one made by `cgstvg.model.tokenizer.build_tokenizer`); the CPU default.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase, RobertaConfig, RobertaModel

ROBERTA_BASE = {
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
}
"""roberta-base's architecture (the release's text encoder), for random-weight full-size runs."""


def roberta_config(
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    max_positions: int,
    dropout: float = 0.1,
) -> RobertaConfig:
    """A RobertaConfig with RoBERTa-base's conventions (pad id 1, positions offset by pad+1, eps 1e-5).

    `max_positions` counts the two positions RoBERTa reserves (pad and the one before the first token), so
    sentences of up to max_positions - 2 tokens (with <s> and </s>) fit.
    """
    return RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


class TextEncoder(nn.Module):
    """Sentences -> RoBERTa token features and a key-padding mask.

    forward(sentences: B strings) -> (features (B, L, hidden) float, pad_mask (B, L) bool, True = padding),
    L = the longest tokenized sentence of the batch (with <s> and </s>). Sentences are lower-cased like the
    release, and truncated to the model's positions (the release would crash instead).
    `out_channels` = hidden size (768 for roberta-base).
    """

    def __init__(
        self, model: RobertaModel, tokenizer: PreTrainedTokenizerBase, lower_case: bool = True, trainable: bool = True
    ) -> None:
        super().__init__()
        if len(tokenizer) > model.config.vocab_size:
            raise ValueError(
                f"text backbone: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
                f"is {model.config.vocab_size}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.lower_case = lower_case
        self.out_channels = model.config.hidden_size
        self.max_tokens = model.config.max_position_embeddings - 2
        model.requires_grad_(trainable)

    @classmethod
    def from_pretrained(
        cls, model_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None, **kwargs: Any
    ) -> TextEncoder:
        """RoBERTa weights from `model_dir`, tokenizer from `tokenizer_dir` (default: the same directory)."""
        model = RobertaModel.from_pretrained(model_dir, add_pooling_layer=False, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or model_dir, local_files_only=True)
        return cls(model, tokenizer, **kwargs)

    @classmethod
    def from_config(
        cls,
        tokenizer_dir: str | os.PathLike,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        intermediate_size: int,
        max_positions: int,
        dropout: float = 0.1,
        vocab_size: int | None = None,
        **kwargs: Any,
    ) -> TextEncoder:
        """Random weights; the vocabulary is the tokenizer's unless `vocab_size` is given (e.g. 50265)."""
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        config = roberta_config(
            vocab_size or len(tokenizer), hidden_size, num_layers, num_heads, intermediate_size, max_positions, dropout
        )
        return cls(RobertaModel(config, add_pooling_layer=False), tokenizer, **kwargs)

    def forward(self, sentences: Sequence[str]) -> tuple[Tensor, Tensor]:
        if isinstance(sentences, str) or not sentences:
            raise ValueError(f"text backbone: expected a non-empty list of sentences, got {sentences!r}")
        texts = [s.lower() for s in sentences] if self.lower_case else list(sentences)
        device = self.model.embeddings.word_embeddings.weight.device
        tokens = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(device)
        hidden = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        return hidden, tokens["attention_mask"].eq(0)


def build_text(
    cfg: dict[str, Any], tokenizer_dir: str | os.PathLike | None = None, where: str = "params.yaml:model.backbones.text"
) -> TextEncoder:
    """Build from a params section.

    With `pretrained_dir` set: `from_pretrained(pretrained_dir, tokenizer_dir)`. Otherwise random weights of
    the section's size (hidden_size, num_layers, num_heads, intermediate_size, max_positions, dropout,
    optional vocab_size) with the tokenizer in `tokenizer_dir` (required then). `lower_case` and `trainable`
    apply to both.
    """
    cfg = dict(cfg)
    common = {k: cfg.pop(k) for k in ("lower_case", "trainable") if k in cfg}
    pretrained = cfg.pop("pretrained_dir", None)
    cfg.pop("tokenizer_vocab_size", None)  # read by whoever builds the tokenizer (build_tokenizer's vocab_size)
    if pretrained:
        return TextEncoder.from_pretrained(pretrained, tokenizer_dir, **common)
    allowed = {"hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions", "dropout", "vocab_size"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise KeyError(
            f"{where}: unknown keys {unknown} (known: {sorted(allowed)} and pretrained_dir, "
            f"tokenizer_vocab_size, lower_case, trainable)"
        )
    if tokenizer_dir is None:
        raise ValueError(f"{where}: random-weight RoBERTa needs a tokenizer directory (build_tokenizer)")
    return TextEncoder.from_config(tokenizer_dir, **cfg, **common)
