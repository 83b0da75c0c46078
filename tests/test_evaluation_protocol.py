"""The release's two-pass test protocol and the single-pass one, on hand-computed numbers."""

import pytest
import torch

from cgstvg.evaluation import (
    PassPrediction,
    interleaved_passes,
    interpolate_boxes,
    merge_passes,
    run_protocol,
)


def test_interpolation_fills_every_frame_between_first_and_last():
    frames, boxes = interpolate_boxes(
        torch.tensor([10, 14, 15]),
        torch.tensor([[0.0, 0.0, 40.0, 40.0], [8.0, 4.0, 48.0, 44.0], [0.0, 0.0, 10.0, 10.0]]),
    )
    assert frames.tolist() == [10, 11, 12, 13, 14, 15]
    assert boxes.dtype == torch.float64
    assert boxes.tolist() == [
        [0.0, 0.0, 40.0, 40.0],
        [2.0, 1.0, 42.0, 41.0],
        [4.0, 2.0, 44.0, 42.0],
        [6.0, 3.0, 46.0, 43.0],
        [8.0, 4.0, 48.0, 44.0],  # sampled frames keep their boxes exactly
        [0.0, 0.0, 10.0, 10.0],
    ]


def test_interpolation_of_one_frame_and_bad_input():
    frames, boxes = interpolate_boxes([7], [[1.0, 2.0, 3.0, 4.0]])
    assert frames.tolist() == [7] and boxes.tolist() == [[1.0, 2.0, 3.0, 4.0]]
    with pytest.raises(ValueError, match="strictly increasing"):
        interpolate_boxes([3, 3], [[0, 0, 1, 1], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        interpolate_boxes([1, 2], [[0, 0, 1, 1]])


def test_interleaved_passes_are_the_release_even_odd_split():
    even, odd = interleaved_passes(7)
    assert even.tolist() == [0, 2, 4, 6] and odd.tolist() == [1, 3, 5]
    assert [p.tolist() for p in interleaved_passes(5, 1)] == [[0, 1, 2, 3, 4]]
    assert [p.tolist() for p in interleaved_passes(1)] == [[0]]  # an empty second pass is left out


def test_two_passes_merge_boxes_and_take_the_segment_hull():
    # Sampled frames (2x rate) 0, 3, 6, 9, 12, 15: pass A sees 0, 6, 12 and pass B sees 3, 9, 15.
    a = PassPrediction(
        frame_ids=torch.tensor([0, 6, 12]),
        boxes=torch.tensor([[0.0, 0.0, 30.0, 30.0], [6.0, 0.0, 36.0, 30.0], [12.0, 0.0, 42.0, 30.0]]),
        segment=(6, 13),  # [frame_ids[1], frame_ids[2] + 1)
    )
    b = PassPrediction(
        frame_ids=torch.tensor([3, 9, 15]),
        boxes=torch.tensor([[3.0, 0.0, 33.0, 30.0], [9.0, 3.0, 39.0, 33.0], [15.0, 0.0, 45.0, 30.0]]),
        segment=(3, 10),
    )
    tube = merge_passes([a, b])
    assert tube.segment == (3, 13)
    assert tube.frame_ids.tolist() == list(range(16))
    x1 = tube.boxes[:, 0].tolist()
    assert x1 == [float(f) for f in range(16)]  # both passes lie on x1 = frame, so the merge is linear
    y1 = tube.boxes[:, 1].tolist()
    assert y1[6:13] == [0.0, 1.0, 2.0, 3.0, 2.0, 1.0, 0.0]  # rises to pass B's frame 9, falls back


def test_run_protocol_calls_each_pass_with_its_positions():
    frame_ids = torch.tensor([100, 102, 104, 106, 108])
    seen = []

    def predict(positions):
        seen.append(positions.tolist())
        ids = frame_ids[positions]
        boxes = torch.stack([ids.double(), ids.double(), ids.double() + 10, ids.double() + 10], dim=1)
        return PassPrediction(ids, boxes, (int(ids[0]), int(ids[-1]) + 1))

    tube = run_protocol(frame_ids, predict, "two_pass")
    assert seen == [[0, 2, 4], [1, 3]]
    assert tube.segment == (100, 109)
    assert tube.frame_ids.tolist() == list(range(100, 109))
    assert tube.boxes[:, 0].tolist() == [float(f) for f in range(100, 109)]

    seen.clear()
    single = run_protocol(frame_ids, predict, "single_pass")
    assert seen == [[0, 1, 2, 3, 4]]
    assert single.segment == tube.segment and torch.equal(single.boxes, tube.boxes)
    with pytest.raises(ValueError, match="protocol must be one of"):
        run_protocol(frame_ids, predict, "dense")


def test_merge_rejects_overlapping_passes_and_empty_segments():
    p = PassPrediction(torch.tensor([0, 2]), torch.zeros(2, 4), (0, 3))
    with pytest.raises(ValueError, match="not disjoint"):
        merge_passes([p, p])
    with pytest.raises(ValueError, match="is empty"):
        merge_passes([PassPrediction(torch.tensor([0, 2]), torch.zeros(2, 4), (2, 2))])


def test_predict_passes_runs_a_batch_and_leaves_out_a_video_s_missing_pass():
    from cgstvg.evaluation import predict_passes

    frame_ids = [torch.tensor([100, 102, 104, 106]), torch.tensor([7])]  # the second video has no odd pass
    seen = []

    def predict(k, passes):
        seen.append((k, passes))
        out = []
        for ids in frame_ids:
            ids = ids[k::passes]
            boxes = torch.stack([ids.double(), ids.double(), ids.double() + 10, ids.double() + 10], dim=1)
            out.append(PassPrediction(ids, boxes, (int(ids[0]), int(ids[-1]) + 1) if len(ids) else (0, 1)))
        return out

    first, second = predict_passes([len(f) for f in frame_ids], predict, "two_pass")
    assert seen == [(0, 2), (1, 2)]
    assert first.segment == (100, 107) and first.frame_ids.tolist() == list(range(100, 107))
    assert second.segment == (7, 8) and second.frame_ids.tolist() == [7]  # pass 1's empty prediction is left out
    with pytest.raises(ValueError, match="at least one sampled frame"):
        predict_passes([3, 0], predict, "two_pass")
