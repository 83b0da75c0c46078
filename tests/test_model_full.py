"""The full model (backbones + head) built from params.yaml runs on raw frames and sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgstvg.model.cgstvg import build_cgstvg, head_config
from cgstvg.model.criterion import build_criterion
from cgstvg.model.targets import GroundingTargets
from cgstvg.model.tokenizer import build_tokenizer
from cgstvg.utils.params import load_params, section

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
SENTENCES = ["the red square moves left", "a blue circle is moving up", "the triangle that is green grows"]


@pytest.fixture(scope="module")
def model_section():
    return section(load_params(PARAMS), "model", PARAMS)


@pytest.fixture(scope="module")
def model(model_section, tmp_path_factory):
    tok = build_tokenizer(SENTENCES * 3, tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=300)
    torch.manual_seed(0)
    return build_cgstvg(model_section, tok)


def test_params_model_section_builds_the_small_default(model_section, model):
    cfg = head_config(model_section)
    assert cfg.d_model == model.head.cfg.d_model
    assert model.head.cfg.appearance_dim == model.appearance.out_channels
    build_criterion(model_section["loss"])


def test_full_model_on_frames_with_padding_and_training_step(model, model_section):
    b, t, h, w = 2, 4, 64, 80
    frames = torch.randn(b, t, 3, h, w)
    time_mask = torch.tensor([[False] * 4, [False, False, False, True]])
    pixel_mask = torch.zeros(b, t, h, w, dtype=torch.bool)
    pixel_mask[1, :, :, 64:] = True  # the second video is narrower
    model.train()
    gt = torch.tensor([[False, True, True, False], [True, True, False, False]])
    targets = GroundingTargets(torch.full((b, t, 4), 0.4), gt)
    out = model(frames, SENTENCES[:2], pixel_mask, time_mask, targets=targets)
    assert out.pred_boxes.shape == (b, t, 4) and out.pred_sted.shape == (b, t, 2)
    criterion = build_criterion(model_section["loss"])
    losses = criterion(out, targets)
    criterion.weighted_total(losses, model.head.cfg.dec_layers).backward()
    assert model.head.input_proj.weight.grad is not None
    assert list(model.motion.parameters())
    assert all(p.grad is None for p in model.motion.parameters())  # frozen

    model.eval()
    with torch.no_grad():
        batched = model(frames, SENTENCES[:2], pixel_mask, time_mask)
        alone = model(frames[:1], SENTENCES[:1])
    # Video 0 has no padding: the batch does not change its result.
    torch.testing.assert_close(batched.pred_boxes[0], alone.pred_boxes[0], atol=1e-5, rtol=0)
