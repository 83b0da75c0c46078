"""The model-agnostic engine: parameter groups, schedule, EMA, checkpoints, resume, distributed environment."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from cgstvg.engine import checkpoint as ckpt
from cgstvg.engine.distributed import init_distributed
from cgstvg.engine.ema import build_ema
from cgstvg.engine.optim import GroupSpec, build_optimizer, build_scheduler, group_specs_from_params
from cgstvg.engine.train_loop import TrainSettings, train

OPTIM = {
    "lr": 3e-4,
    "rest_warmup": False,
    "groups": {
        "visual_backbone": {"prefixes": ["vis_encoder."], "lr": 2e-5, "warmup": False},
        "text_encoder": {"prefixes": ["text_encoder."], "lr": 5e-5, "decay": "linear"},
        "temporal_decoder": {"prefixes": ["decoder.time"], "lr": 1e-4, "decay": "linear"},
    },
}


class Toy(nn.Module):
    """Names like the release's modules, so the group prefixes have something to match."""

    def __init__(self):
        super().__init__()
        self.vis_encoder = nn.Linear(4, 8)
        self.text_encoder = nn.Linear(4, 8)
        self.motion = nn.Linear(4, 8).requires_grad_(False)  # frozen, like VidSwin
        self.decoder = nn.ModuleDict({"time": nn.Linear(8, 1), "space": nn.Linear(8, 1)})
        self.drop = nn.Dropout(0.2)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        h = self.drop(self.bn(self.vis_encoder(x) + self.text_encoder(x) + self.motion(x)))
        return self.decoder["time"](h) + self.decoder["space"](h)


def test_param_groups_follow_prefixes_and_skip_frozen():
    model = Toy()
    specs = group_specs_from_params(OPTIM)
    opt = build_optimizer(model, specs, weight_decay=1e-4)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert [g["name"] for g in opt.param_groups] == ["rest", "visual_backbone", "text_encoder", "temporal_decoder"]
    ids = {name: {id(p) for p in g["params"]} for name, g in by_name.items()}
    assert ids["visual_backbone"] == {id(model.vis_encoder.weight), id(model.vis_encoder.bias)}
    assert ids["temporal_decoder"] == {id(p) for p in model.decoder["time"].parameters()}
    assert {id(p) for p in model.decoder["space"].parameters()} <= ids["rest"]
    assert list(model.motion.parameters())
    assert not any(id(p) in s for s in ids.values() for p in model.motion.parameters())
    assert by_name["text_encoder"]["lr"] == 5e-5 and by_name["rest"]["weight_decay"] == 1e-4


def test_groups_reject_bad_params():
    with pytest.raises(ValueError, match="prefixes"):
        group_specs_from_params({"lr": 1e-3, "groups": {"vis": {"lr": 1e-4}}})
    with pytest.raises(ValueError, match="decay"):
        GroupSpec("x", ("a",), 1e-3, decay="cosine")


def test_schedule_warmup_then_multistep_and_linear():
    model = Toy()
    specs = group_specs_from_params(OPTIM)
    opt = build_optimizer(model, specs, weight_decay=0.0)
    sched = build_scheduler(opt, specs, total_steps=100, warmup_steps=10, milestones=[50, 80], gamma=0.1)
    lrs = []
    for _ in range(100):
        lrs.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    # rest: no warm-up, x0.1 at 50 and again at 80
    assert lrs[0]["rest"] == pytest.approx(3e-4) and lrs[49]["rest"] == pytest.approx(3e-4)
    assert lrs[50]["rest"] == pytest.approx(3e-5) and lrs[80]["rest"] == pytest.approx(3e-6)
    # text: linear warm-up over 10 steps, then linear decay towards 0 at step 100
    assert lrs[0]["text_encoder"] == pytest.approx(5e-6) and lrs[9]["text_encoder"] == pytest.approx(5e-5)
    assert lrs[55]["text_encoder"] == pytest.approx(5e-5 * 0.5)
    assert lrs[99]["text_encoder"] < 1e-6


def test_ema_follows_the_closed_form():
    model = nn.Linear(2, 1, bias=False)
    ema = build_ema(model, decay=0.9)
    values = [1.0, 2.0, 3.0]
    expected = None
    for v in values:
        with torch.no_grad():
            model.weight.fill_(v)
        ema.update_parameters(model)
        expected = v if expected is None else 0.9 * expected + 0.1 * v  # the first update copies
    assert ema.module.weight[0, 0].item() == pytest.approx(expected)


def test_checkpoints_are_atomic_kept_and_fingerprinted(tmp_path):
    for step in (5, 10, 15):
        ckpt.save_checkpoint(tmp_path, {"step": step, "fingerprint": "a", "w": torch.full((2,), float(step))}, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [10, 15]
    assert not list(tmp_path.glob(".*tmp"))
    assert ckpt.latest_checkpoint(tmp_path, "a")["w"][0].item() == 15.0
    assert ckpt.latest_checkpoint(tmp_path, "b") is None
    # a truncated newest file (a kill mid-copy by hand) is skipped in favour of the previous one
    (tmp_path / "step_00000020.pt").write_bytes(b"garbage")
    assert ckpt.latest_checkpoint(tmp_path, "a")["step"] == 15
    with pytest.raises(RuntimeError, match="step_00000020.pt"):
        ckpt.load_checkpoint(tmp_path / "step_00000020.pt")
    removed = ckpt.remove_stale(tmp_path, "b")
    assert len(removed) == 3 and ckpt.list_checkpoints(tmp_path) == []


def test_fingerprint_ignores_key_order():
    assert ckpt.fingerprint({"a": 1, "b": [1, 2]}) == ckpt.fingerprint({"b": [1, 2], "a": 1})
    assert ckpt.fingerprint({"a": 1}) != ckpt.fingerprint({"a": 2})


def test_single_process_environment(monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    env = init_distributed("cpu")
    assert (env.rank, env.world_size, env.is_main, env.is_distributed) == (0, 1, True, False)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK"):
        init_distributed("cpu")


# --- the loop ---------------------------------------------------------------------------------------------

STEPS_PER_EPOCH = 6


def _batches(epoch: int, skip: int):
    g = torch.Generator().manual_seed(1000 + epoch)
    xs = torch.randn(STEPS_PER_EPOCH, 8, 4, generator=g)
    for i in range(skip, STEPS_PER_EPOCH):
        yield xs[i], xs[i].sum(1, keepdim=True)


def _loss(model, batch):
    x, y = batch
    pred = model(x)
    l1 = (pred - y).abs().mean()
    l2 = 0.5 * ((pred - y) ** 2).mean()
    return l1 + l2, {"l1": l1, "l2": l2}


def _settings(**kw):
    base = dict(
        epochs=3,
        steps_per_epoch=STEPS_PER_EPOCH,
        warmup_steps=3,
        milestones=(12,),
        ema_decay=0.9,
        grad_clip=1.0,
        checkpoint_every=4,
        log_every=2,
        keep_checkpoints=3,
        seed=7,
    )
    base.update(kw)
    return TrainSettings(**base)


def _run(tmp_path, name, loss=_loss, validate=None, **kw):
    torch.manual_seed(0)
    model = Toy()
    return train(
        model,
        group_specs_from_params(OPTIM),
        loss,
        _batches,
        _settings(**kw),
        init_distributed("cpu"),
        tmp_path / name,
        fingerprint="fp",
        live_dir=tmp_path / f"{name}_live",
        validate=validate,
        progress=False,
    )


def live_files(directory) -> dict[str, str]:
    """Every file of a DVCLive folder, by relative path."""
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


class Crash(Exception):
    pass


def test_resume_after_a_crash_continues_the_same_run(tmp_path):
    whole = _run(tmp_path, "whole")
    assert whole.step == 18 and [r["step"] for r in whole.curve] == list(range(2, 19, 2))

    calls = {"n": 0}

    def crashing(model, batch):
        calls["n"] += 1
        if calls["n"] == 11:  # dies during step 11: the last checkpoint is at step 8
            raise Crash
        return _loss(model, batch)

    with pytest.raises(Crash):
        _run(tmp_path, "cut", loss=crashing)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "cut")] == [4, 8]
    resumed = _run(tmp_path, "cut")
    assert resumed.resumed_from == 8 and resumed.steps_run == 10 and resumed.step == 18
    assert resumed.curve == whole.curve  # same steps, same losses, same learning rates
    for a, b in zip(whole.ema.state_dict().values(), resumed.ema.state_dict().values()):
        torch.testing.assert_close(a, b)
    # DVCLive's files of the resumed run are the uninterrupted run's: no step twice, none missing
    assert live_files(tmp_path / "cut_live") == live_files(tmp_path / "whole_live")
    curves = tmp_path / "whole_live" / "plots" / "metrics" / "train"
    assert sorted(p.stem for p in (curves / "lr").iterdir()) == sorted(
        ["rest", "visual_backbone", "text_encoder", "temporal_decoder"]
    )
    total = (curves / "loss" / "total.tsv").read_text().splitlines()
    assert total[0] == "step\ttotal" and [int(r.split("\t")[0]) for r in total[1:]] == list(range(2, 19, 2))

    again = _run(tmp_path, "whole")  # a finished run resumes at its end and does nothing
    assert again.steps_run == 0 and again.curve == whole.curve


def test_stale_checkpoints_are_not_resumed(tmp_path):
    _run(tmp_path, "a", epochs=1)
    torch.manual_seed(0)
    other = train(
        Toy(),
        group_specs_from_params(OPTIM),
        _loss,
        _batches,
        _settings(epochs=1),
        init_distributed("cpu"),
        tmp_path / "a",
        fingerprint="changed",
        progress=False,
    )
    assert other.resumed_from == 0 and other.steps_run == STEPS_PER_EPOCH


def test_short_epoch_is_an_error(tmp_path):
    def short(epoch, skip):
        return list(_batches(epoch, skip))[:-1]

    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="yielded 5 batches"):
        train(
            Toy(),
            group_specs_from_params(OPTIM),
            _loss,
            short,
            _settings(epochs=1),
            init_distributed("cpu"),
            tmp_path / "s",
            fingerprint="fp",
            progress=False,
        )


def test_settings_validate():
    with pytest.raises(ValueError, match="multiple"):
        _settings(checkpoint_every=5, log_every=2)


def test_the_same_state_saves_to_the_same_bytes(tmp_path):
    # Checkpoints are DVC outputs: equal weights must hash equally, whatever temporary name the atomic write used.
    state = {"step": 3, "model": {"w": torch.arange(6.0)}}
    a = ckpt.save_checkpoint(tmp_path / "a", state)
    b = ckpt.save_checkpoint(tmp_path / "b", state)
    assert a.read_bytes() == b.read_bytes()


def test_settings_from_the_params_train_section():
    from pathlib import Path

    from cgstvg.utils.params import load_params

    cfg = load_params(Path(__file__).resolve().parents[1] / "params.yaml")["train"]
    settings = TrainSettings.from_params(cfg, steps_per_epoch=7, seed=3, find_unused_parameters=True)
    assert settings.epochs == cfg["epochs"] and settings.total_steps == 7 * cfg["epochs"]
    assert settings.warmup_steps == round(cfg["schedule"]["warmup_fraction"] * 7 * cfg["epochs"])
    assert settings.milestones == tuple(int(e * 7) for e in cfg["schedule"]["milestones_epochs"])
    assert settings.weight_decay == cfg["optim"]["weight_decay"] and settings.grad_clip == cfg["grad_clip"]
    assert (settings.seed, settings.find_unused_parameters, settings.amp_dtype) == (3, True, cfg["amp_dtype"])
    assert settings.checkpoint_every == cfg["checkpoint_every"] and settings.log_every == cfg["log_every"]


def _noisy_loss(model, batch):
    """The loss scaled by draws from numpy's and Python's global generators (which the loop does not reseed)."""
    total, terms = _loss(model, batch)
    return total * (1 + 0.01 * float(np.random.rand()) + 0.01 * random.random()), terms


def _greedy_validation(ema):
    """A validation that draws from every global generator and leaves the EMA model in eval mode."""
    ema.eval()
    torch.rand(3), np.random.rand(5), random.random()
    with torch.no_grad():
        out = ema.module(torch.ones(2, 4))
    return {"m_tIoU": float(out.mean()), "m_vIoU": 0.25}


def _seeded_run(tmp_path, name, **kw):
    np.random.seed(0)
    random.seed(0)
    return _run(tmp_path, name, loss=kw.pop("loss", _noisy_loss), **kw)


def test_validation_changes_nothing_in_training_and_resumes(tmp_path):
    off = _seeded_run(tmp_path, "off")
    on = _seeded_run(tmp_path, "on", validate=_greedy_validation, validation_every=4)
    assert off.validation == [] and [v["step"] for v in on.validation] == [4, 8, 12, 16]
    assert on.curve == off.curve
    for a, b in zip(
        [*off.model.state_dict().values(), *off.ema.state_dict().values()],
        [
            *on.model.state_dict().values(),
            *on.ema.state_dict().values(),
        ],
    ):
        assert torch.equal(a, b)
    assert all(m.training for m in on.ema.modules())  # as the loop keeps them, whatever the validation did
    val = tmp_path / "on_live" / "plots" / "metrics" / "val"
    assert [r.split("\t")[0] for r in (val / "m_vIoU.tsv").read_text().splitlines()] == ["step", "4", "8", "12", "16"]
    summary = json.loads((tmp_path / "on_live" / "metrics.json").read_text())
    assert summary == {"val": {"m_tIoU": on.validation[-1]["m_tIoU"], "m_vIoU": 0.25}, "step": 18}

    # resume: the rows of the checkpoint logged again, then the rest; no step twice, none missing (the plain loss:
    # a resumed run reseeds torch, not numpy's or Python's generators)
    whole = _run(tmp_path, "ref", validate=_greedy_validation, validation_every=4)
    calls = {"n": 0}

    def crashing(model, batch):
        calls["n"] += 1
        if calls["n"] == 15:  # dies during step 15: validated at 12, last checkpoint at 12
            raise Crash
        return _loss(model, batch)

    with pytest.raises(Crash):
        _run(tmp_path, "cut", loss=crashing, validate=_greedy_validation, validation_every=4)
    resumed = _run(tmp_path, "cut", validate=_greedy_validation, validation_every=4)
    assert resumed.resumed_from == 12 and resumed.validation == whole.validation
    assert live_files(tmp_path / "cut_live") == live_files(tmp_path / "ref_live")
