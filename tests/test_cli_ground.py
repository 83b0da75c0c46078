"""`cgstvg ground`: the tube JSON, the rendered video, one-line errors, and the batch mode."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cgstvg.cli import main
from cgstvg.inference.checkpoint import load_grounding_model
from cgstvg.inference.ground import ground
from cgstvg.visualize import PRED_COLOR
from ground_support import (
    BOX_CXCYWH,
    SENTENCE,
    TINY_PARAMS,
    VIDEO_FPS,
    VIDEO_HW,
    make_checkpoint,
    make_tokenizer,
    make_video,
)

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ground")
    tokenizer = make_tokenizer(d / "tokenizer")
    return {
        "dir": d,
        "tokenizer": tokenizer,
        "ckpt": make_checkpoint(d / "model.pt", tokenizer),
        "fixed": make_checkpoint(d / "fixed.pt", tokenizer, fixed_box=True),
        "video": make_video(d / "clip.mp4"),  # 24 frames at 8 fps: 3 s
    }


def _ground(files, *extra, ckpt="ckpt", video=None, text=SENTENCE):
    return main(
        [
            "ground",
            "--video",
            str(video or files["video"]),
            "--text",
            text,
            "--checkpoint",
            str(files[ckpt]),
            "--device",
            "cpu",
            *extra,
        ]
    )


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines  # one line, whatever went wrong
    assert lines[0].startswith("cgstvg ground: error: ")
    return lines[0]


def test_tube_json_schema(files, tmp_path, capsys):
    out = tmp_path / "tube.json"
    assert _ground(files, "--out", str(out)) == 0
    tube = json.loads(out.read_text())
    assert set(tube) == {"sentence", "video", "checkpoint", "segment", "boxes", "sampling"}
    assert tube["sentence"] == SENTENCE

    h, w = VIDEO_HW
    assert tube["video"] == {
        "path": str(files["video"]),
        "frames": 24,
        "fps": VIDEO_FPS,
        "height": h,
        "width": w,
        "duration_s": 3.0,
    }
    sha = hashlib.sha256(files["ckpt"].read_bytes()).hexdigest()
    assert tube["checkpoint"] == {"path": str(files["ckpt"]), "sha256": sha, "layout": "cgstvg", "step": None}

    seg = tube["segment"]
    assert set(seg) == {"start_frame", "end_frame", "end_frame_exclusive", "start_s", "end_s", "frames", "score"}
    assert all(isinstance(seg[k], int) for k in ("start_frame", "end_frame", "end_frame_exclusive", "frames"))
    assert 0 <= seg["start_frame"] <= seg["end_frame"] < 24
    assert seg["end_frame_exclusive"] == seg["end_frame"] + 1
    assert seg["frames"] == seg["end_frame"] - seg["start_frame"] + 1
    assert seg["start_s"] == pytest.approx(seg["start_frame"] / VIDEO_FPS)
    assert seg["end_s"] == pytest.approx(seg["end_frame_exclusive"] / VIDEO_FPS)
    assert 0.0 < seg["score"] <= 1.0

    sampling = tube["sampling"]
    # hcstvg rule at 2 x 4 fps on an 8 fps video: every frame but the last (the release drops it); two passes.
    assert sampling == {
        "policy": "hcstvg",
        "protocol": "two_pass",
        "passes": 2,
        "sampled_frames": 23,
        "frame_ids": list(range(23)),
        "model_input_hw": [48, 60],
        "capped": False,
    }

    boxes = tube["boxes"]
    assert [b["frame"] for b in boxes] == list(range(seg["start_frame"], seg["end_frame"] + 1))  # one per frame
    for b in boxes:
        assert set(b) == {"frame", "time_s", "box_xyxy", "conf", "sampled"}
        assert b["time_s"] == pytest.approx(b["frame"] / VIDEO_FPS)
        x1, y1, x2, y2 = b["box_xyxy"]
        assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h  # inside the frame, original pixels
        assert 0.0 <= b["conf"] <= 1.0
        assert b["sampled"] == (b["frame"] in sampling["frame_ids"])

    # Without --out the same JSON goes to stdout (and the model is deterministic in eval mode).
    assert _ground(files) == 0
    assert json.loads(capsys.readouterr().out) == tube


def _read_video(path: Path) -> np.ndarray:
    if path.suffix == ".gif":
        import imageio.v3 as iio

        return iio.imread(path)
    import decord

    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def _red(pixels: np.ndarray) -> np.ndarray:
    # tolerant enough for H.264 at the renderer's low crf, strict enough that the grey noise never passes
    return (np.abs(pixels.astype(int) - np.array(PRED_COLOR)) < 60).all(axis=-1)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_rendered_frames_carry_the_tube_boxes(files, tmp_path, suffix):
    out, render = tmp_path / "tube.json", tmp_path / f"render{suffix}"
    assert _ground(files, "--out", str(out), "--render", str(render), ckpt="fixed") == 0
    tube = json.loads(out.read_text())
    h, w = VIDEO_HW
    cx, cy, bw, bh = BOX_CXCYWH
    expected = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
    boxes = {b["frame"]: b["box_xyxy"] for b in tube["boxes"]}
    assert boxes  # so the loops below check some boxes
    for box in boxes.values():
        assert box == pytest.approx(expected, abs=1e-3)  # normalised box -> original pixels of the 80 x 64 video

    video = _read_video(render)
    ids = tube["sampling"]["frame_ids"]
    assert video.shape[0] == len(ids) and video.shape[2] == w and video.shape[1] > h  # caption band below
    for frame_id, picture in zip(ids, video[:, :h]):
        if frame_id in boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in boxes[frame_id])
            xm, ym = (x1 + x2) // 2, (y1 + y2) // 2
            # middle pixel of the 3 px outline on each edge (it keeps full chroma in yuv420p)
            edges = [(ym, x1 + 1), (ym, x2 - 2), (y1 + 1, xm), (y2 - 2, xm)]
            assert all(_red(picture[y, x]) for y, x in edges), frame_id
            assert not _red(picture[ym, xm]), frame_id  # an outline, not a filled box
        else:
            assert not _red(picture).any(), frame_id  # outside the predicted segment: no box


def test_large_videos_render_scaled_down_with_the_boxes_scaled_too(files, tmp_path):
    render = tmp_path / "small.gif"
    tube = ground(
        load_grounding_model(files["fixed"]), files["video"], SENTENCE, render=render, render_max_side=40
    ).to_json()
    video = _read_video(render)
    h, w = VIDEO_HW[0] // 2, VIDEO_HW[1] // 2  # long side 80 -> 40
    assert video.shape[2] == w
    x1, y1, x2, y2 = (int(round(v / 2)) for v in tube["boxes"][0]["box_xyxy"])
    picture = video[tube["sampling"]["frame_ids"].index(tube["segment"]["start_frame"]), :h]
    assert all(
        _red(picture[y, x])
        for y, x in [((y1 + y2) // 2, x1), ((y1 + y2) // 2, x2 - 1), (y1, (x1 + x2) // 2), (y2 - 1, (x1 + x2) // 2)]
    )


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d / "nope.mp4", "video not found"),
        (lambda d: _write(d / "empty.mp4", b""), "cannot decode the video (the file is empty)"),
        (lambda d: _write(d / "corrupt.mp4", b"not a video at all" * 64), "cannot decode the video"),
    ],
)
def test_bad_video_is_a_one_line_error(files, tmp_path, capsys, make, expected):
    video = make(tmp_path)
    assert _ground(files, video=video) == 1
    line = _error_line(capsys)
    assert str(video) in line and expected in line


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_empty_sentence_is_a_one_line_error(files, capsys):
    assert _ground(files, text="   ") == 1
    assert "the sentence is empty" in _error_line(capsys)


def test_video_length_limit_and_raising_it(files, tmp_path, capsys):
    assert _ground(files, "--max-seconds", "2") == 1
    line = _error_line(capsys)
    assert str(files["video"]) in line and "3.0 s, over the limit of 2 s" in line and "--max-seconds" in line
    assert _ground(files, "--max-seconds", "5", "--out", str(tmp_path / "ok.json")) == 0


def test_checkpoint_errors(files, tmp_path, capsys):
    other = {**TINY_PARAMS, "model": {**TINY_PARAMS["model"], "d_model": 32}}  # another model config
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    assert _ground(files, "--params", str(tmp_path / "other.yaml")) == 1
    line = _error_line(capsys)
    assert str(files["ckpt"]) in line and "do not match the model" in line and "shapes differ" in line

    state = torch.load(files["ckpt"], weights_only=True)
    torch.save({"model": state["model"]}, tmp_path / "bare.pt")  # weights without params
    files = {
        **files,
        "bare": tmp_path / "bare.pt",
        "junk": _write(tmp_path / "junk.pt", b"\x00junk" * 99),
        "absent": tmp_path / "absent.pt",
    }
    for name, expected in [
        ("bare", "carries no params"),
        ("junk", "cannot read the checkpoint"),
        ("absent", "checkpoint not found"),
    ]:
        assert _ground(files, ckpt=name) == 1
        line = _error_line(capsys)
        assert str(files[name]) in line and expected in line


def test_batch_reports_failures_per_line_in_order(files, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_video(clips / "a.mp4", frames=16)
    _write(clips / "broken.mp4", b"")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(
            [
                json.dumps({"video": "clips/a.mp4", "sentence": SENTENCE}),  # relative to the pairs file
                json.dumps({"video": "clips/missing.mp4", "sentence": SENTENCE}),
                "{not json",
                "",  # blank lines are skipped
                json.dumps({"video": "clips/a.mp4", "text": "  "}),
                json.dumps({"video": "clips/broken.mp4", "sentence": SENTENCE}),
                json.dumps({"video": str(files["video"]), "text": "a blue circle moves up"}),
            ]
        )
        + "\n"
    )
    out = tmp_path / "results.jsonl"
    code = main(
        ["ground", "--batch", str(pairs), "--checkpoint", str(files["ckpt"]), "--out", str(out), "--device", "cpu"]
    )
    assert code == 1  # some pairs failed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4, 5]
    errors = [r.get("error") for r in records]
    assert errors[0] is None and errors[5] is None
    assert "video not found" in errors[1] and "missing.mp4" in errors[1]
    assert "pairs.jsonl:3" in errors[2] and "not valid JSON" in errors[2]
    assert "the sentence is empty" in errors[3]
    assert "broken.mp4" in errors[4] and "cannot decode" in errors[4]
    assert records[1]["input"] == {"video": str(clips / "missing.mp4"), "sentence": SENTENCE}
    assert records[0]["video"]["path"] == str(clips / "a.mp4") and records[0]["segment"]["end_frame"] < 16
    assert records[5]["sentence"] == "a blue circle moves up" and records[5]["video"]["frames"] == 24
    assert "2 of 6 pairs grounded, 4 failed" in capsys.readouterr().err
    # A CSV of good pairs: exit status 0.
    (tmp_path / "pairs.csv").write_text(f'video,sentence\nclips/a.mp4,{SENTENCE}\n{files["video"]},"a, b"\n')
    code = main(
        [
            "ground",
            "--batch",
            str(tmp_path / "pairs.csv"),
            "--checkpoint",
            str(files["ckpt"]),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["sentence"] for r in records] == [SENTENCE, "a, b"] and not any("error" in r for r in records)


def test_console_script_exit_status_and_usage(files):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cgstvg.cli",
            "ground",
            "--video",
            str(files["dir"] / "gone.mp4"),
            "--text",
            SENTENCE,
            "--checkpoint",
            str(files["ckpt"]),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"cgstvg ground: error: {files['dir'] / 'gone.mp4'}: video not found"]
    with pytest.raises(SystemExit) as usage:
        main(["ground", "--batch", "pairs.csv", "--checkpoint", "m.pt"])  # a batch needs --out
    assert usage.value.code == 2


def test_an_out_path_that_cannot_be_written_is_one_line(files, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert _ground(files, "--out", str(tmp_path / "taken")) == 1
    assert _error_line(capsys).endswith(f"{tmp_path / 'taken'}: cannot be written: it is a directory")
