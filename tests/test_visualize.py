"""Rendered tubes carry the boxes where the tube says, in GIF and mp4, and the plot data is what DVC reads."""

import csv

import numpy as np
import pytest

from cgstvg.visualize import (
    boxes_at_frames,
    contact_sheet,
    draw_prediction,
    draw_tube,
    per_sample_plot_data,
    render_prediction,
    write_video,
)

T, H, W = 6, 63, 95  # odd sizes: the mp4 writer must pad them
FRAME_IDS = np.arange(10, 16)
GT_SEGMENT, GT_BOX = (11, 14), [10, 10, 40, 50]  # inclusive: frames 11..14
PRED_SEGMENT, PRED_BOX = (12, 15), [41, 21, 81, 51]  # exclusive end: frames 12..14


def _frames():
    # grey noise, no saturated colour: any pure red or green pixel comes from the drawing
    rng = np.random.default_rng(0)
    return rng.integers(70, 150, size=(T, H, W, 3), dtype=np.uint8)


def _render(path, original_size=None, scale=1):
    return render_prediction(
        path,
        _frames(),
        FRAME_IDS,
        sentence="the man in the red shirt sits down",
        pred_segment=PRED_SEGMENT,
        pred_frames=np.arange(10, 16),  # the model gives boxes at every frame; only 12..14 are the tube
        pred_boxes=np.tile(np.array(PRED_BOX) * scale, (6, 1)),
        gt_segment=GT_SEGMENT,
        gt_boxes=np.tile(np.array(GT_BOX) * scale, (4, 1)),
        original_size=original_size,
        fps=5,
    )


def _read(path):
    if path.suffix == ".gif":
        import imageio.v3 as iio

        return iio.imread(path)
    import decord

    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def _is(pixel, color):
    # tolerant enough for H.264 at a low crf, strict enough that grey noise never passes
    return all(abs(int(p) - c) < 60 for p, c in zip(pixel, color))


def _edge_pixels(box):
    """Middle pixel of the 3 px outline on each edge (the one that keeps full chroma in yuv420p)."""
    x1, y1, x2, y2 = box
    xm, ym = (x1 + x2) // 2, (y1 + y2) // 2
    return [(ym, x1 + 1), (ym, x2 - 2), (y1 + 1, xm), (y2 - 2, xm)]


def _has_colour(picture, color):
    diff = np.abs(picture.astype(int) - np.array(color)).max(axis=-1)
    return bool((diff < 60).any())


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_boxes_are_drawn_in_the_right_frames_and_read_back(tmp_path, suffix):
    path = _render(tmp_path / f"tube{suffix}")
    video = _read(path)
    assert video.shape[0] == T and video.shape[2] >= W and video.shape[1] > H  # caption band below the picture
    for i, frame_id in enumerate(FRAME_IDS):
        picture = video[i, :H, :W]
        in_gt = GT_SEGMENT[0] <= frame_id <= GT_SEGMENT[1]
        in_pred = PRED_SEGMENT[0] <= frame_id < PRED_SEGMENT[1]
        for y, x in _edge_pixels(GT_BOX):
            assert _is(picture[y, x], (0, 255, 0)) == in_gt, (suffix, frame_id, y, x, picture[y, x])
        for y, x in _edge_pixels(PRED_BOX):
            assert _is(picture[y, x], (255, 0, 0)) == in_pred, (suffix, frame_id, y, x, picture[y, x])
        if not in_pred:
            assert not _has_colour(picture, (255, 0, 0)), (suffix, frame_id)  # no red where no prediction
        if not in_gt:
            assert not _has_colour(picture, (0, 255, 0)), (suffix, frame_id)


def test_boxes_in_original_pixels_are_scaled_to_resized_frames(tmp_path):
    path = _render(tmp_path / "scaled.gif", original_size=(2 * H, 2 * W), scale=2)
    picture = _read(path)[2, :H, :W]  # frame 12: both boxes
    for y, x in _edge_pixels(GT_BOX):
        assert _is(picture[y, x], (0, 255, 0))
    for y, x in _edge_pixels(PRED_BOX):
        assert _is(picture[y, x], (255, 0, 0))


def test_draw_tube_marks_segments_and_rejects_bad_input():
    frames = _frames()
    boxes = boxes_at_frames(FRAME_IDS, [12, 13], [[1, 2, 30, 40], [3, 4, 30, 40]])
    assert np.isnan(boxes[[0, 1, 4, 5]]).all() and boxes[2].tolist() == [1, 2, 30, 40]
    in_pred = np.array([0, 0, 1, 1, 0, 0], dtype=bool)
    drawn = draw_tube(frames, pred_boxes=boxes, in_pred_segment=in_pred, sentence="a dog")
    band = drawn[:, H:]
    assert [_has_colour(b, (255, 0, 0)) for b in band] == in_pred.tolist()  # the red marker follows the segment
    assert np.array_equal(drawn[0, :H], frames[0])  # nothing drawn where there is no box
    with pytest.raises(ValueError, match=r"pred_boxes must be \(6, 4\)"):
        draw_tube(frames, pred_boxes=boxes[:3])
    with pytest.raises(ValueError, match="line_width must be >= 2"):
        draw_tube(frames, line_width=1)


def test_contact_sheet_tiles_evenly_spaced_drawn_frames():
    """The still that evaluate logs through DVCLive: the drawn frames, first and last included, row by row."""
    drawn = draw_prediction(
        _frames(),
        FRAME_IDS,
        sentence="the man in the red shirt sits down",
        pred_segment=PRED_SEGMENT,
        pred_frames=np.arange(10, 16),
        pred_boxes=np.tile(PRED_BOX, (6, 1)),
        gt_segment=GT_SEGMENT,
        gt_boxes=np.tile(GT_BOX, (4, 1)),
    )
    t, h, w, _ = drawn.shape
    sheet = contact_sheet(drawn, count=4, columns=3, gap=2)
    assert sheet.shape == (2 * h + 2, 3 * w + 4, 3)
    # frames 0, 2, 3, 5 (linspace over 6, rounded) at (row, column) (0, 0), (0, 1), (0, 2), (1, 0)
    for k, i in enumerate([0, 2, 3, 5]):
        r, c = divmod(k, 3)
        assert np.array_equal(sheet[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w], drawn[i])
    assert not sheet[h + 2 :, w + 2 :].any()  # the empty tiles and the gaps stay black
    assert contact_sheet(drawn[:2], count=8).shape == (h, 2 * w + 2, 3)  # fewer frames than asked: each once
    with pytest.raises(ValueError, match="T >= 1"):
        contact_sheet(drawn[:0])


def test_write_video_rejects_unknown_extensions(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported extension '\.avi'"):
        write_video(tmp_path / "x.avi", _frames(), fps=5)
    assert not list(tmp_path.iterdir())


def test_plot_data_for_dvc(tmp_path):
    paths = per_sample_plot_data(
        tmp_path, [0.9, 0.2, 1.0, 0.5], [0.05, 0.15, 1.0, float("nan")], ["a", "b", "c", "d"], bins=4
    )
    with open(paths["viou_histogram"]) as f:
        hist = list(csv.DictReader(f))
    assert [(r["bin_start"], r["bin_end"], r["count"]) for r in hist] == [
        ("0", "0.25", "2"),
        ("0.25", "0.5", "0"),
        ("0.5", "0.75", "0"),
        ("0.75", "1", "1"),  # 1.0 falls in the last bin; the NaN is left out
    ]
    with open(paths["tiou_viou"]) as f:
        scatter = list(csv.DictReader(f))
    assert [r["sample_id"] for r in scatter] == ["a", "b", "c", "d"]
    assert float(scatter[2]["tIoU"]) == 1.0 and float(scatter[0]["vIoU"]) == 0.05
