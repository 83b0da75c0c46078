"""`evaluate --clips`: the synthetic default's hard / decoy subsets, scored from the per-sample rows."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.evaluate import subset_metrics


def _row(video_id: str, tiou: float, viou: float, dataset: str = "hcstvg_v1") -> dict:
    return {"dataset": dataset, "split": "test", "video_id": video_id, "tIoU": tiou, "vIoU": viou}


def test_subsets_score_only_their_clips_matched_by_dataset_split_and_video(tmp_path):
    clips = tmp_path / "clips.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"dataset": "hcstvg_v1", "split": "test", "video_id": "synth_test_00000", "hard": True, "decoy": None},
                {
                    "dataset": "hcstvg_v1",
                    "split": "test",
                    "video_id": "synth_test_00001",
                    "hard": False,
                    "decoy": "grow",
                },
                {"dataset": "hcstvg_v1", "split": "test", "video_id": "synth_test_00002", "hard": True, "decoy": None},
                # Same video id in another dataset: must not be taken for the hcstvg_v1 clip.
                {"dataset": "vidstg", "split": "test", "video_id": "synth_test_00001", "hard": True, "decoy": None},
            ]
        ),
        clips,
    )
    rows = [_row("synth_test_00000", 0.8, 0.5), _row("synth_test_00001", 0.4, 0.1), _row("synth_test_00002", 0.6, 0.3)]
    out = subset_metrics(rows, clips)
    assert out["hard"] == pytest.approx({"m_tIoU": 0.7, "m_vIoU": 0.4, "vIoU@0.3": 0.5, "vIoU@0.5": 0.0, "n": 2.0})
    assert out["decoy"] == pytest.approx({"m_tIoU": 0.4, "m_vIoU": 0.1, "vIoU@0.3": 0.0, "vIoU@0.5": 0.0, "n": 1.0})


def test_no_clips_table_or_no_match_gives_no_subset(tmp_path):
    assert subset_metrics([_row("a", 1, 1)], None) == {}
    assert subset_metrics([_row("a", 1, 1)], tmp_path / "missing.parquet") == {}
    clips = tmp_path / "clips.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"dataset": "hcstvg_v1", "split": "test", "video_id": "x", "hard": True, "decoy": None}]),
        clips,
    )
    assert subset_metrics([_row("real_video", 1, 1)], clips) == {}
