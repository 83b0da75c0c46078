"""A small RoBERTa-compatible tokenizer trained from the training sentences (for the CPU default).

The release tokenizes with the pretrained `roberta-base` tokenizer. Without network access and without pretrained
text weights, the CPU default trains a byte-level BPE tokenizer of the same kind (same special tokens and ids:
<s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4; sentences wrapped as `<s> ... </s>`) on its own training sentences,
and saves it as a directory that `transformers.AutoTokenizer.from_pretrained(dir)` loads (a RobertaTokenizer).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import ByteLevelBPETokenizer, processors

from cgstvg.utils.atomic import atomic_path

# RoBERTa's special tokens, in the order that gives RoBERTa's ids.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def build_tokenizer(
    sentences: Iterable[str], out_dir: str | os.PathLike, vocab_size: int, model_max_length: int = 512
) -> Path:
    """Train a byte-level BPE tokenizer on the lower-cased `sentences` and save it to `out_dir`.

    Deterministic: the same sentences (in any order, with repeats) give byte-identical files, because the
    sentences are de-duplicated and sorted before training. The directory is written atomically. Returns
    `out_dir`.
    """
    corpus = sorted({sentence.lower() for sentence in sentences})
    if not corpus:
        raise ValueError(f"build_tokenizer({out_dir}): no sentences to train on")
    if vocab_size <= 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"build_tokenizer({out_dir}): vocab_size={vocab_size} must exceed the 256 byte symbols "
            f"plus {len(SPECIAL_TOKENS)} special tokens"
        )
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(
        corpus, vocab_size=vocab_size, min_frequency=1, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    # RoBERTa's template: <s> A </s>.
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>")), True, False
    )
    with atomic_path(out_dir, is_dir=True) as tmp:
        tokenizer.save(str(tmp / "tokenizer.json"))
        tokenizer.save_model(str(tmp))  # vocab.json + merges.txt, the slow tokenizer's files
        config = {
            "tokenizer_class": "RobertaTokenizer",
            "model_max_length": model_max_length,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "sep_token": "</s>",
            "cls_token": "<s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "mask_token": "<mask>",
            "add_prefix_space": False,
        }
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    return Path(out_dir)
