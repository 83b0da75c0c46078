"""The three backbones: shapes, freezing, the motion backbone against the release's outputs, text padding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from cgstvg.model.appearance import ResNetTrunk, SmallConvNet, build_appearance, downsample_mask
from cgstvg.model.backbone_weights import swin_key
from cgstvg.model.motion import VideoSwinBackbone, build_motion
from cgstvg.model.text import build_text
from cgstvg.model.tokenizer import build_tokenizer
from tolerances import chain_atol

# Fixture and conversion numerics: also run by .ci/run under other CPU capabilities and thread counts.
pytestmark = pytest.mark.numerics

SENTENCES = [
    "The red square moves left",
    "a blue circle is moving up",
    "the triangle that is green grows",
    "a yellow square gets bigger",
    "the purple circle moves right",
    "a green triangle moves down",
]


# --- appearance -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, channels", [("resnet18", 512), ("resnet34", 512)])
def test_resnet_trunk_shape_and_release_freezing(name, channels):
    net = ResNetTrunk(name).eval()
    frames = torch.randn(3, 3, 70, 100)
    with torch.no_grad():
        out = net(frames)
    assert out.shape == (3, channels, 3, 4)  # ceil(70/32), ceil(100/32)
    assert (net.out_channels, net.stride) == (channels, 32)
    trainable = {n.split(".")[0] for n, p in net.named_parameters() if p.requires_grad}
    frozen = {n.split(".")[0] for n, p in net.named_parameters() if not p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"} and frozen == {"conv1", "layer1"}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # FrozenBatchNorm2d only
    assert not hasattr(net, "fc") and not hasattr(net, "avgpool")


def test_resnet_trunk_layer3_and_no_training():
    net = ResNetTrunk("resnet18", last_layer="layer3", trainable=False)
    assert (net.out_channels, net.stride) == (256, 16) and not hasattr(net, "layer4")
    assert list(net.parameters())
    assert not any(p.requires_grad for p in net.parameters())


def test_folded_batchnorm_chunks_and_channels_last_give_torchvisions_features():
    torch.manual_seed(0)
    frames = torch.randn(5, 3, 32, 48)
    plain = ResNetTrunk("resnet18", fold_batchnorm=False, channels_last=False)
    with torch.no_grad():  # non-trivial frozen statistics, so that folding them matters
        for name, buf in plain.named_buffers():
            buf.copy_(
                torch.rand_like(buf) + 0.5 if name.endswith(("running_var", "weight")) else torch.randn_like(buf) * 0.1
            )
    fast = ResNetTrunk("resnet18", frame_chunk=2, channels_last=True)  # fold_batchnorm=True by default
    fast.load_state_dict(plain.state_dict())
    expected = plain(frames)
    got = fast(frames)
    # Equal up to the float32 rounding of the op chain (folded weights, another oneDNN blocking for another batch
    # size): ResNet-18 is 20 conv + norm layers (depth 40), its widest reduction a 3x3x512 kernel.
    torch.testing.assert_close(got, expected, rtol=0, atol=chain_atol(expected, 40, 3 * 3 * 512))
    expected.square().mean().backward()
    got.square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), fast.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            # Backward runs the chain again (depth 80); a weight gradient reduces over 5 x 16 x 24 positions.
            torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=chain_atol(a.grad, 80, 3 * 3 * 512, scale_floor=0))
    small, small_chunked = SmallConvNet().eval(), SmallConvNet(frame_chunk=2).eval()
    small_chunked.load_state_dict(small.state_dict())
    with torch.no_grad():
        plain_small = small(frames)  # chunks change the batch, so the blocking: 4 conv + norm layers of <= 3x3x64
        torch.testing.assert_close(small_chunked(frames), plain_small, rtol=0, atol=chain_atol(plain_small, 8, 576))


def test_small_cnn_coordinate_channels_give_each_cell_its_place():
    net = build_appearance({"name": "small_cnn", "channels": [8, 16], "coord_channels": True}).eval()
    frames = torch.randn(2, 3, 12, 20)  # stride 4: a 3 x 5 grid
    with torch.no_grad():
        out = net(frames)
    assert out.shape == (2, 18, 3, 5) and net.out_channels == 18
    # The appended channels are the cell centres as fractions of the frame: x then y (float32 (i + 0.5) / n
    # against rounded decimals: a few ulps, within assert_close's float32 default of 1.3e-6 relative).
    torch.testing.assert_close(out[0, -2, 1], torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]))
    torch.testing.assert_close(out[1, -1, :, 2], torch.tensor([1 / 6, 0.5, 5 / 6]))
    # The features before them are the plain network's.
    plain = build_appearance({"name": "small_cnn", "channels": [8, 16]}).eval()
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():  # the same weights and input through the same kernels in one process: bit-exact
        torch.testing.assert_close(out[:, :-2], plain(frames), rtol=0, atol=0)
    with pytest.raises(KeyError, match="unknown keys"):
        build_appearance({"name": "small_cnn", "coords": True})


def test_small_cnn_is_trainable_with_stride_16():
    net = build_appearance({"name": "small_cnn", "channels": [16, 32, 64, 64]})
    frames = torch.randn(4, 3, 96, 128)
    out = net(frames)
    assert out.shape == (4, 64, 6, 8) and (net.out_channels, net.stride) == (64, 16)
    out.mean().backward()
    assert list(net.parameters())
    assert all(p.grad is not None for p in net.parameters())


def test_build_appearance_rejects_unknown_keys():
    with pytest.raises(KeyError, match="model.backbones.appearance.*'depth'"):
        build_appearance({"name": "resnet18", "depth": 3})
    with pytest.raises(ValueError, match="resnet7"):
        build_appearance({"name": "resnet7"})


def test_downsample_mask_marks_padded_cells():
    mask = torch.zeros(2, 64, 96, dtype=torch.bool)
    mask[1, :, 48:] = True  # right half of frame 1 is padding
    small = downsample_mask(mask, (2, 3))
    assert small.dtype == torch.bool and small.shape == (2, 2, 3)
    assert not small[0].any() and small[1, :, 2].all() and not small[1, :, 0].any()


# --- motion -----------------------------------------------------------------------------------------------------


def _fixture_swin(fixtures_dir, **kwargs):
    config = json.loads((fixtures_dir / "vidswin" / "config.json").read_text())["config"]
    net = VideoSwinBackbone(
        config["embed_dim"],
        config["depths"],
        config["num_heads"],
        config["patch_size"],
        config["window_size"],
        config["drop_path_rate"],
        **kwargs,
    )
    state = {swin_key(k): v.float() for k, v in load_file(fixtures_dir / "vidswin" / "state_dict.safetensors").items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    # The fixture leaves out the relative_position_index buffers (the constructor computes them).
    assert not unexpected and all(k.endswith("attn.relative_position_index") for k in missing)
    clip = load_file(fixtures_dir / "vidswin" / "input_clip.safetensors")["clip"].float()
    expected = load_file(fixtures_dir / "vidswin" / "outputs.safetensors")
    return net, clip, [expected[f"out.{i}"] for i in range(4)]


def _swin_atol(fixtures_dir, reference: torch.Tensor) -> float:
    """The fixture Swin's float32 op-chain tolerance (tests/tolerances.py): the authors' machine against this one.

    Depth: the patch embedding and its norm (2); per block LayerNorm, qkv projection, scores, softmax, weighted
    sum, output projection, LayerNorm, two MLP matmuls (9); per patch merging a norm and a projection (2). Width:
    the longest reduction, a softmax / weighted sum over one window's tokens or the MLP's 4C channels.
    """
    config = json.loads((fixtures_dir / "vidswin" / "config.json").read_text())["config"]
    depths = config["depths"]
    depth = 2 + 9 * sum(depths) + 2 * (len(depths) - 1)
    window = config["window_size"][0] * config["window_size"][1] * config["window_size"][2]
    width = max(window, 4 * config["embed_dim"] * 2 ** (len(depths) - 1))
    return chain_atol(reference, depth, width)


def test_motion_backbone_reproduces_the_release_stages(fixtures_dir):
    net, clip, expected = _fixture_swin(fixtures_dir)
    with torch.no_grad():
        stages = net.forward_stages(clip, num_frames=12)
        last = net(clip, num_frames=12)
    for ours, theirs in zip(stages, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=_swin_atol(fixtures_dir, theirs))
    assert torch.equal(last, stages[3])  # the same code on the same input in one process: bit-exact


def test_motion_sdpa_attention_matches_in_chunks_and_batches(fixtures_dir):
    net, clip, expected = _fixture_swin(fixtures_dir, attention="sdpa", attention_chunk=6)
    with torch.no_grad():
        stages = net.forward_stages(clip, num_frames=12)
        # Two videos of 6 frames: windows of video 1 must get the shift regions of their own position.
        two = net.forward_stages(clip, num_frames=6)
    ref, _, _ = _fixture_swin(fixtures_dir)
    with torch.no_grad():
        two_ref = ref.forward_stages(clip, num_frames=6)
    # SDPA regroups the window attention's reductions (another kernel, chunks): the same float32 op-chain bound,
    # against the authors' outputs and against torchvision's attention here.
    for ours, theirs in zip(stages, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=_swin_atol(fixtures_dir, theirs))
    for ours, theirs in zip(two, two_ref, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=_swin_atol(fixtures_dir, theirs))


def test_motion_backbone_is_frozen_and_drop_path_follows_the_switch():
    parent = nn.Module()
    parent.quiet = build_motion({"embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2]})
    parent.release = build_motion({"embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2], "drop_path_in_train": True})
    parent.train()
    assert not parent.quiet.training and parent.release.training
    assert list(parent.parameters())
    assert not any(p.requires_grad for p in parent.parameters())
    frames = torch.randn(4, 3, 32, 32)
    assert parent.quiet(frames, 2).shape == (4, 16, 4, 4) and parent.quiet.stride == 8
    parent.eval()
    assert not parent.release.training
    with pytest.raises(ValueError, match="not a multiple"):
        parent.quiet(frames, 3)


def test_release_size_motion_backbone():
    with torch.device("meta"):
        net = VideoSwinBackbone()
    assert (net.out_channels, net.stride) == (768, 32)
    assert not any(k.startswith(("norm.", "head.")) for k in net.state_dict())
    rates = [block.stochastic_depth.p for stage in net.features[::2] for block in stage]
    # Python-double rates rounded to float32 against float32 linspace: a few ulps of values <= 0.2 (1.5e-8 each).
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.2, 12), rtol=0, atol=1e-7)


# --- text -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build_tokenizer(SENTENCES * 3, tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=300)


def test_tokenizer_is_deterministic_and_roberta_compatible(tokenizer_dir, tmp_path):
    again = build_tokenizer(list(reversed(SENTENCES)), tmp_path / "again", vocab_size=300)
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (tokenizer_dir / name).read_bytes(), name
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    ids = tok("the red square")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(SENTENCES, tmp_path / "tiny", vocab_size=100)


def test_text_encoder_pads_lower_cases_and_masks(tokenizer_dir):
    torch.manual_seed(0)
    text = build_text(
        {
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 2,
            "intermediate_size": 64,
            "max_positions": 40,
            "dropout": 0.0,
        },
        tokenizer_dir,
    ).eval()
    assert text.out_channels == 32 and getattr(text.model, "pooler", None) is None
    with torch.no_grad():
        feats, pad = text(["The RED square moves left", "a circle"])
        alone, alone_pad = text(["a circle"])
        lower, _ = text(["the red square moves left"])
    assert feats.shape[:2] == pad.shape and feats.shape[2] == 32 and pad.dtype == torch.bool
    n_short = int((~alone_pad[0]).sum())
    assert not pad[0].any() and not pad[1, :n_short].any() and pad[1, n_short:].all()
    # Padding does not change the real tokens' features; case does not matter. A batch of another shape runs
    # other GEMM blockings: the float32 rounding of 2 layers (depth 16) of <= 64-wide reductions.
    torch.testing.assert_close(feats[1, :n_short], alone[0], rtol=0, atol=chain_atol(alone[0], 16, 64))
    torch.testing.assert_close(feats[0], lower[0], rtol=0, atol=chain_atol(lower[0], 16, 64))
    with pytest.raises(ValueError, match="list of sentences"):
        text("a single string")


def test_text_encoder_trains_and_needs_a_tokenizer(tokenizer_dir):
    cfg = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "max_positions": 20}
    text = build_text(cfg, tokenizer_dir)
    feats, _ = text(SENTENCES[:2])
    feats.square().mean().backward()
    assert text.model.embeddings.word_embeddings.weight.grad is not None
    with pytest.raises(ValueError, match="tokenizer directory"):
        build_text(cfg)
    with pytest.raises(KeyError, match="'layers'"):
        build_text({**cfg, "layers": 2}, tokenizer_dir)


def test_text_encoder_loads_a_local_pretrained_directory(tokenizer_dir, tmp_path):
    cfg = {
        "hidden_size": 16,
        "num_layers": 1,
        "num_heads": 2,
        "intermediate_size": 32,
        "max_positions": 20,
        "dropout": 0.0,
    }
    saved = build_text(cfg, tokenizer_dir).eval()
    saved.model.save_pretrained(tmp_path / "roberta")
    loaded = build_text({"pretrained_dir": str(tmp_path / "roberta")}, tokenizer_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(SENTENCES)[0], saved(SENTENCES)[0], rtol=0, atol=0)


def test_params_yaml_backbones_share_one_grid(tokenizer_dir):
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    cfg = yaml.safe_load(params.read_text())["model"]["backbones"]
    appearance, motion = build_appearance(cfg["appearance"]), build_motion(cfg["motion"])
    text = build_text(cfg["text"], tokenizer_dir)
    frames = torch.randn(2 * 4, 3, 96, 128)  # 2 videos of 4 frames at the synthetic default's size
    with torch.no_grad():
        app, mot = appearance(frames), motion(frames, num_frames=4)
        words, _ = text(SENTENCES[:2])
    assert app.shape[-2:] == mot.shape[-2:] == (6, 8) and appearance.stride == motion.stride == 16
    assert (app.shape[1], mot.shape[1], words.shape[-1]) == (
        appearance.out_channels,
        motion.out_channels,
        text.out_channels,
    )
