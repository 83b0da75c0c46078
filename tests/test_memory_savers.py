"""train.memory: each activation-checkpointing switch gives the plain model's gradients, dropout active.

A small full model (ResNet-18 to layer3 with frozen BatchNorm, a 2-stage Video Swin and a 1-layer RoBERTa, both at
stride 16; head d = 32) in float32 and training mode, two videos, one with padded frames. The same seed before each
forward, so any difference would come from the saver itself (a recomputed dropout mask, a frozen-BN update).
"""

from __future__ import annotations

import pytest
import torch
import yaml
from torch.autograd.graph import saved_tensors_hooks

from cgstvg.model.appearance import ResNetTrunk
from cgstvg.model.cgstvg import CGSTVG, build_cgstvg
from cgstvg.model.config import CGSTVGConfig
from cgstvg.model.criterion import CGSTVGCriterion
from cgstvg.model.memory_savers import MemorySavers, apply_memory_savers
from cgstvg.model.motion import VideoSwinBackbone
from cgstvg.model.targets import GroundingTargets
from cgstvg.model.text import TextEncoder
from ground_support import SENTENCES, make_tokenizer
from pipeline_support import REPO

HEAD = CGSTVGConfig(
    d_model=32, heads=4, ffn_dim=64, enc_layers=2, dec_layers=3, context_heads=4, context_ffn_dim=32, dropout=0.1
)
WEIGHTS = {"loss_bbox": 5, "loss_giou": 4, "loss_sted": 10, "loss_actioness": 2, "loss_conf": 1}
B, T, HEIGHT, WIDTH = 2, 5, 32, 48
SAVERS = {
    "appearance": MemorySavers(checkpoint_appearance_frames=3),
    "encoder": MemorySavers(checkpoint_encoder=True),
    "decoder": MemorySavers(checkpoint_decoder=True),
    "all": MemorySavers(checkpoint_appearance_frames=4, checkpoint_encoder=True, checkpoint_decoder=True),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> CGSTVG:
    torch.manual_seed(0)
    text = TextEncoder.from_config(make_tokenizer(tmp_path_factory.mktemp("tok")), 16, 1, 2, 32, 40, dropout=0.1)
    swin = VideoSwinBackbone(16, (1, 1), (1, 2), (1, 8, 8), (2, 2, 2), attention="sdpa")
    net = CGSTVG(ResNetTrunk("resnet18", last_layer="layer3"), swin, text, HEAD).train()
    # Nonzero frozen-BN statistics, so that a BN that moved under recomputation would show.
    for name, buf in net.appearance.named_buffers():
        if name.endswith("running_mean"):
            buf.normal_(0, 0.1)
    return net


def _batch():
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(B, T, 3, HEIGHT, WIDTH, generator=g)
    time_mask = torch.zeros(B, T, dtype=torch.bool)
    time_mask[1, 3:] = True
    gt_mask = torch.zeros(B, T, dtype=torch.bool)
    gt_mask[:, 1:3] = True
    boxes = torch.tensor([0.5, 0.5, 0.3, 0.4]).expand(B, T, 4).clone()
    return frames, time_mask, GroundingTargets(boxes=boxes, gt_mask=gt_mask)


def _grads(model: CGSTVG, savers: MemorySavers) -> dict[str, torch.Tensor]:
    apply_memory_savers(model, savers)
    try:
        model.zero_grad(set_to_none=True)
        frames, time_mask, targets = _batch()
        criterion = CGSTVGCriterion(WEIGHTS)
        torch.manual_seed(123)  # the dropout masks of both runs
        out = model(frames, SENTENCES[:B], time_mask=time_mask, targets=targets)
        criterion.weighted_total(criterion(out, targets), HEAD.dec_layers).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    finally:
        apply_memory_savers(model, MemorySavers())


@pytest.fixture(scope="module")
def plain(model) -> dict[str, torch.Tensor]:
    return _grads(model, MemorySavers())


@pytest.mark.parametrize("name", list(SAVERS))
def test_saver_gives_the_plain_gradients(model, plain, name):
    bn_before = {k: v.clone() for k, v in model.appearance.named_buffers()}
    saved = _grads(model, SAVERS[name])
    assert saved.keys() == plain.keys()
    # Every trained part reaches a gradient: ResNet layer2-3, text, encoder, both decoders.
    for prefix in ("appearance.layer2.", "text.", "head.encoder.", "head.temporal_decoder.", "head.spatial_decoder."):
        assert any(k.startswith(prefix) for k in saved), prefix
    for key, grad in plain.items():
        torch.testing.assert_close(saved[key], grad, rtol=1e-5, atol=1e-7, msg=key)
    for key, buf in model.appearance.named_buffers():
        assert torch.equal(buf, bn_before[key]), key  # frozen BN untouched by the recomputations


def test_dropout_is_active_so_the_rng_check_means_something(model, plain):
    # Another seed gives other gradients: the equality above holds because recomputation replays the RNG.
    torch.manual_seed(5)
    frames, time_mask, targets = _batch()
    model.zero_grad(set_to_none=True)
    criterion = CGSTVGCriterion(WEIGHTS)
    out = model(frames, SENTENCES[:B], time_mask=time_mask, targets=targets)
    criterion.weighted_total(criterion(out, targets), HEAD.dec_layers).backward()
    grad = model.head.encoder.layers[0].linear1.weight.grad
    assert not torch.equal(grad, plain["head.encoder.layers.0.linear1.weight"])


def test_savers_shrink_what_autograd_keeps(model):
    def kept_bytes(savers: MemorySavers) -> int:
        apply_memory_savers(model, savers)
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        frames, time_mask, targets = _batch()
        try:
            with saved_tensors_hooks(pack, lambda t: t):
                model(frames, SENTENCES[:B], time_mask=time_mask, targets=targets)
        finally:
            apply_memory_savers(model, MemorySavers())
        return total

    plain = kept_bytes(MemorySavers())
    assert kept_bytes(SAVERS["appearance"]) < 0.6 * plain
    assert kept_bytes(SAVERS["all"]) < 0.3 * plain


def test_no_saver_acts_without_grad(model):
    apply_memory_savers(model, SAVERS["all"])
    try:
        frames, time_mask, _ = _batch()
        with torch.no_grad():
            model.eval()
            out = model(frames, SENTENCES[:B], time_mask=time_mask)
        apply_memory_savers(model, MemorySavers())
        with torch.no_grad():
            plain = model(frames, SENTENCES[:B], time_mask=time_mask)
        assert torch.equal(out.pred_boxes, plain.pred_boxes)
    finally:
        model.train()
        apply_memory_savers(model, MemorySavers())


def test_the_small_cnn_refuses_appearance_checkpointing(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    small = build_cgstvg(params["model"], make_tokenizer(tmp_path / "tok"))
    with pytest.raises(ValueError, match="training-mode BatchNorm"):
        apply_memory_savers(small, SAVERS["appearance"])
    apply_memory_savers(small, MemorySavers(checkpoint_encoder=True, checkpoint_decoder=True))  # these are fine


def test_from_params_names_unknown_keys():
    assert MemorySavers.from_params(None) == MemorySavers()
    with pytest.raises(KeyError, match="checkpoint_encodr"):
        MemorySavers.from_params({"checkpoint_encodr": True})
