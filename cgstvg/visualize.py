"""Pictures people look at: a tube drawn on the video (GIF or mp4, or a still contact sheet) and the data behind the
per-sample plots.

A rendered frame is the video frame with the GT box in pure green and the predicted box in pure red (outlines of
`line_width` pixels lying just inside the box edges: columns x1 .. x1+w-1 and x2-w .. x2-1, rows likewise), over a
caption band below the frame that holds the per-frame IoU ("IoU -" when a box is missing) and the frame id, the
sentence, and two segment markers ("GT" filled green inside the GT segment, "pred" filled red inside the predicted
segment, grey outside). The band never covers the picture, so box pixels can be checked on read-back.
"""

from __future__ import annotations

import csv
import os
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cgstvg.evaluation.metrics import paired_box_iou
from cgstvg.utils.atomic import atomic_path

GT_COLOR = (0, 255, 0)
PRED_COLOR = (255, 0, 0)
TEXT_COLOR = (255, 255, 255)
BAND_COLOR = (0, 0, 0)
OFF_COLOR = (90, 90, 90)
VIDEO_SUFFIXES = (".gif", ".mp4")


def _array(x, dtype) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=dtype)


def boxes_at_frames(frame_ids, tube_frames, tube_boxes) -> np.ndarray:
    """Look up a tube's boxes at `frame_ids`: (T,) ids, tube (M,) ids and (M, 4) boxes -> (T, 4), NaN rows where
    the tube has no box."""
    frame_ids = _array(frame_ids, np.int64).reshape(-1)
    tube_frames = _array(tube_frames, np.int64).reshape(-1)
    tube_boxes = _array(tube_boxes, np.float64).reshape(-1, 4)
    out = np.full((frame_ids.size, 4), np.nan)
    if tube_frames.size:
        pos = np.clip(np.searchsorted(tube_frames, frame_ids), 0, tube_frames.size - 1)
        hit = tube_frames[pos] == frame_ids
        out[hit] = tube_boxes[pos[hit]]
    return out


def _font(width: int) -> ImageFont.FreeTypeFont:
    # Pillow gives the FreeType default font when a size is asked for (and FreeType is built in, as in the wheels)
    return cast(ImageFont.FreeTypeFont, ImageFont.load_default(size=max(9, min(18, width // 24))))


def _caption_lines(sentence: str, font, width: int) -> list[str]:
    if not sentence:
        return []
    chars_per_line = max(8, int(width / max(font.getlength("abcdefghij") / 10, 1)) - 1)
    return textwrap.wrap(sentence, chars_per_line) or [""]


def _box_outline(draw: ImageDraw.ImageDraw, box: np.ndarray, color, width: int) -> None:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    # PIL's rectangle is inclusive of its far corner and grows inward: pixels x1..x2-1 are the box (no +1).
    draw.rectangle([x1, y1, max(x2 - 1, x1), max(y2 - 1, y1)], outline=color, width=width)


def draw_tube(
    frames,
    *,
    gt_boxes=None,
    pred_boxes=None,
    sentence: str = "",
    in_gt_segment=None,
    in_pred_segment=None,
    frame_ids=None,
    line_width: int = 3,
) -> np.ndarray:
    """Draw boxes, per-frame IoU, caption and segment markers.

    frames: (T, H, W, 3) uint8 RGB. gt_boxes / pred_boxes: (T, 4) xyxy pixels of these frames, a NaN row where the
    frame has no box (see `boxes_at_frames`), or None. in_gt_segment / in_pred_segment: (T,) bool, or None for no
    marker. frame_ids: (T,) ids printed in the band. Returns (T, H + band, W, 3) uint8.
    """
    frames = _array(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got shape {frames.shape}")
    if line_width < 2:
        raise ValueError(f"line_width must be >= 2 so the edges survive video compression, got {line_width}")
    t, h, w, _ = frames.shape
    tracks = {}
    for name, boxes, color in (("gt_boxes", gt_boxes, GT_COLOR), ("pred_boxes", pred_boxes, PRED_COLOR)):
        if boxes is not None:
            boxes = _array(boxes, np.float64)
            if boxes.shape != (t, 4):
                raise ValueError(f"{name} must be ({t}, 4) for {t} frames (NaN rows for no box), got {boxes.shape}")
            tracks[name] = (boxes, color)
    marks = {}
    for name, mask, color in (("GT", in_gt_segment, GT_COLOR), ("pred", in_pred_segment, PRED_COLOR)):
        if mask is not None:
            mask = _array(mask, bool).reshape(-1)
            if mask.size != t:
                raise ValueError(f"the {name} segment mask must have {t} entries, got {mask.size}")
            marks[name] = (mask, color)
    ious = None
    if len(tracks) == 2:
        ious = paired_box_iou(tracks["pred_boxes"][0], tracks["gt_boxes"][0])  # NaN where a box is missing

    font = _font(w)
    line_h = int(font.size * 1.3) + 1
    lines = _caption_lines(sentence, font, w - 4)
    band = line_h * (len(lines) + 2) + 4  # info row (IoU, frame id), caption lines, marker row
    ids = None if frame_ids is None else _array(frame_ids, np.int64).reshape(-1)
    out = np.empty((t, h + band, w, 3), dtype=np.uint8)
    for i in range(t):  # PIL draws one image at a time
        image = Image.new("RGB", (w, h + band), BAND_COLOR)
        image.paste(Image.fromarray(frames[i]), (0, 0))
        draw = ImageDraw.Draw(image)
        for boxes, color in tracks.values():
            if np.isfinite(boxes[i]).all():
                _box_outline(draw, boxes[i], color, line_width)
        y = h + 2
        if ious is not None:
            label = f"IoU {ious[i]:.2f}" if np.isfinite(ious[i]) else "IoU -"
            draw.text((2, y), label, fill=TEXT_COLOR, font=font)
        if ids is not None:
            label = f"#{int(ids[i])}"
            draw.text((w - int(font.getlength(label)) - 2, y), label, fill=TEXT_COLOR, font=font)
        for k, text in enumerate(lines):
            draw.text((2, y + (k + 1) * line_h), text, fill=TEXT_COLOR, font=font)
        y += (len(lines) + 1) * line_h
        x = 2
        for name, (mask, color) in marks.items():
            draw.rectangle([x, y + 1, x + line_h - 3, y + line_h - 3], fill=color if mask[i] else OFF_COLOR)
            x += line_h
            draw.text((x, y), name, fill=TEXT_COLOR, font=font)
            x += int(font.getlength(name)) + 6
        out[i] = np.asarray(image)
    return out


def write_video(path: str | os.PathLike, frames, fps: float, *, crf: int = 10) -> Path:
    """Write (T, H, W, 3) uint8 frames as an animated GIF or an H.264 mp4, chosen by the extension; atomic.

    mp4: libx264, yuv420p (plays everywhere), odd sizes padded to even with black rows/columns at the
    bottom/right, `crf` low so that pure box colours survive. GIF: Pillow's palette, looping, 1/fps per frame.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"{path}: unsupported extension {path.suffix!r}; use one of {VIDEO_SUFFIXES}")
    frames = _array(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"{path}: frames must be (T, H, W, 3) uint8 with T >= 1, got shape {frames.shape}")
    if not fps > 0:
        raise ValueError(f"{path}: fps must be > 0, got {fps}")
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            import imageio.v3 as iio

            iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
        else:
            _write_mp4(tmp, frames, fps, crf)
    return path


def _write_mp4(path: Path, frames: np.ndarray, fps: float, crf: int) -> None:
    import av

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def draw_prediction(
    frames,
    frame_ids,
    *,
    sentence: str,
    pred_segment,
    pred_frames,
    pred_boxes,
    gt_segment=None,
    gt_boxes=None,
    original_size: tuple[int, int] | None = None,
    line_width: int = 3,
) -> np.ndarray:
    """Draw one sample's predicted tube (and GT, when given) on its frames: (T, H + band, W, 3) uint8 (`draw_tube`).

    frames: (T, H, W, 3) uint8, the decoded frames with original ids `frame_ids` (T,). pred_segment (ps, pe) with
    pe exclusive; pred_frames (M,) / pred_boxes (M, 4): the predicted track in original pixels (e.g. a
    `TubePrediction`); the red box is drawn only inside the predicted segment, which is the tube the model
    outputs. gt_segment (gs, ge) inclusive and gt_boxes (ge - gs + 1, 4), as in the normalized schema.
    original_size: (height, width) the boxes refer to when the frames were resized (default: the frames' size).
    """
    frames = _array(frames, np.uint8)
    ids = _array(frame_ids, np.int64).reshape(-1)
    if frames.ndim != 4 or ids.size != frames.shape[0]:
        raise ValueError(f"{ids.size} frame ids for frames of shape {frames.shape}")
    h, w = frames.shape[1:3]
    oh, ow = original_size if original_size is not None else (h, w)
    scale = np.array([w / ow, h / oh, w / ow, h / oh])
    ps, pe = int(pred_segment[0]), int(pred_segment[1])
    in_pred = (ids >= ps) & (ids < pe)
    pred = boxes_at_frames(ids, pred_frames, pred_boxes) * scale
    pred[~in_pred] = np.nan
    gt = in_gt = None
    if gt_segment is not None:
        gs, ge = int(gt_segment[0]), int(gt_segment[1])
        gt_boxes = _array(gt_boxes, np.float64).reshape(-1, 4)
        if gt_boxes.shape[0] != ge - gs + 1:
            raise ValueError(f"GT segment ({gs}, {ge}) needs {ge - gs + 1} boxes, got {gt_boxes.shape[0]}")
        gt = boxes_at_frames(ids, np.arange(gs, ge + 1), gt_boxes) * scale
        in_gt = (ids >= gs) & (ids <= ge)
    return draw_tube(
        frames,
        gt_boxes=gt,
        pred_boxes=pred,
        sentence=sentence,
        in_gt_segment=in_gt,
        in_pred_segment=in_pred,
        frame_ids=ids,
        line_width=line_width,
    )


def render_prediction(path: str | os.PathLike, frames, frame_ids, *, fps: float = 5.0, **tube) -> Path:
    """Draw one sample's tube (`draw_prediction`, keyword arguments `tube`) and write `path` (.gif or .mp4)."""
    try:
        drawn = draw_prediction(frames, frame_ids, **tube)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return write_video(path, drawn, fps)


def contact_sheet(drawn, *, count: int = 8, columns: int = 4, gap: int = 2) -> np.ndarray:
    """`count` evenly spaced frames of a drawn tube (T, H, W, 3) tiled row by row into one still image, `columns`
    wide with `gap` black pixels between tiles: the whole tube at a glance, for image plots (DVCLive, Studio)."""
    drawn = _array(drawn, np.uint8)
    if drawn.ndim != 4 or drawn.shape[0] == 0:
        raise ValueError(f"drawn frames must be (T, H, W, 3) with T >= 1, got shape {drawn.shape}")
    t, h, w, _ = drawn.shape
    picks = np.unique(np.linspace(0, t - 1, min(count, t)).round().astype(int))
    rows = -(-len(picks) // columns)
    cols = min(columns, len(picks))
    sheet = np.zeros((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), dtype=np.uint8)
    for k, i in enumerate(picks):
        r, c = divmod(k, columns)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = drawn[i]
    return sheet


def per_sample_plot_data(
    out_dir: str | os.PathLike,
    tiou,
    viou,
    sample_ids=None,
    *,
    bins: int = 10,
) -> dict[str, Path]:
    """Write the data of two `dvc plots` as CSV: the vIoU histogram and tIoU against vIoU per sample.

    tiou, viou: (N,) per-sample values (e.g. `STVGMetrics.per_sample()`). Writes `viou_histogram.csv`
    (columns bin_start, bin_end, bin_center, count; `bins` equal bins over [0, 1], NaN values left out) and
    `tiou_viou.csv` (sample_id, tIoU, vIoU; one row per sample). Returns {"viou_histogram": path,
    "tiou_viou": path}. dvc.yaml renders them with e.g. `x: bin_center, y: count, template: bar_horizontal`
    and `x: tIoU, y: vIoU, template: scatter`.
    """
    tiou = _array(tiou, np.float64).reshape(-1)
    viou = _array(viou, np.float64).reshape(-1)
    if tiou.size != viou.size:
        raise ValueError(f"tiou has {tiou.size} values but viou has {viou.size}")
    ids = list(range(tiou.size)) if sample_ids is None else [str(s) for s in sample_ids]
    if len(ids) != tiou.size:
        raise ValueError(f"{len(ids)} sample ids for {tiou.size} values")
    counts, edges = np.histogram(viou[np.isfinite(viou)], bins=bins, range=(0.0, 1.0))
    out_dir = Path(out_dir)
    paths = {"viou_histogram": out_dir / "viou_histogram.csv", "tiou_viou": out_dir / "tiou_viou.csv"}
    rows = {
        "viou_histogram": [
            {"bin_start": f"{a:g}", "bin_end": f"{b:g}", "bin_center": f"{(a + b) / 2:g}", "count": int(c)}
            for a, b, c in zip(edges[:-1], edges[1:], counts)
        ],
        "tiou_viou": [{"sample_id": s, "tIoU": float(t), "vIoU": float(v)} for s, t, v in zip(ids, tiou, viou)],
    }
    for name, path in paths.items():
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[name][0]) if rows[name] else ["sample_id", "tIoU", "vIoU"])
            writer.writeheader()
            writer.writerows(rows[name])
    return paths


__all__ = [
    "GT_COLOR",
    "PRED_COLOR",
    "boxes_at_frames",
    "contact_sheet",
    "draw_prediction",
    "draw_tube",
    "per_sample_plot_data",
    "render_prediction",
    "write_video",
]
