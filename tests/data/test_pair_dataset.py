"""(source, driving) pairs and the first-frame evaluation protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from media_writers import gray_ramp, write_frames, write_mp4
from torch.utils.data import DataLoader

from compress.data.pairs import ClipStore, PairDataset, first_frame_protocol
from compress.data.synthetic import LANDMARK_NAMES
from compress.data.video import read_video
from compress.errors import CompressError

SIZE = (32, 32)
SMALL = {"synthetic_clips": 3, "frames_per_clip": 6}


@pytest.fixture
def fomm_folder(tmp_path: Path) -> Path:
    """train/ with an .mp4 (5 frames) and a png folder (4 frames), test/ with one .mp4 (3 frames)."""
    (tmp_path / "train").mkdir()
    write_mp4(tmp_path / "train" / "a.mp4", gray_ramp(5, 48, 64))
    write_frames(tmp_path / "train" / "b", gray_ramp(4, 40, 40))
    (tmp_path / "test").mkdir()
    write_mp4(tmp_path / "test" / "c.mp4", gray_ramp(3, 48, 48))
    return tmp_path


def test_synthetic_item_has_frames_masks_and_landmarks() -> None:
    item = PairDataset("synthetic", "train", SIZE, seed=0, samples=4, **SMALL)[1]
    assert item["source"].shape == item["driving"].shape == (3, 32, 32)
    assert item["driving_eye_mask"].shape == item["driving_mouth_mask"].shape == (1, 32, 32)
    assert item["source_landmarks"].shape == item["driving_landmarks"].shape == (len(LANDMARK_NAMES), 2)
    assert item["video"] == 1
    assert not torch.equal(item["source"], item["driving"])  # two different frames


def test_items_are_fixed_by_seed_and_index() -> None:
    a = PairDataset("synthetic", "train", SIZE, seed=4, samples=6, **SMALL)
    b = PairDataset("synthetic", "train", SIZE, seed=4, samples=6, **SMALL)
    c = PairDataset("synthetic", "train", SIZE, seed=5, samples=6, **SMALL)
    assert torch.equal(b[5]["driving"], a[5]["driving"])  # also when read in another order
    assert torch.equal(a[2]["source"], b[2]["source"]) and torch.equal(a[2]["driving"], b[2]["driving"])
    assert not torch.equal(a[2]["source"], c[2]["source"])


def test_held_out_synthetic_clips_never_overlap_training_clips() -> None:
    def clips(split: str) -> set[str]:  # over several seeds: no seed's test clip is another's train clip
        return set().union(*(ClipStore("synthetic", split, SIZE, seed, synthetic_clips=50).names for seed in range(3)))

    assert len(clips("train")) == len(clips("test")) == 150
    assert not clips("train") & clips("test")


def test_calibration_uses_training_clips_and_eval_the_held_out_ones() -> None:
    def names(split: str) -> list[str]:
        return ClipStore("synthetic", split, SIZE, 0, synthetic_clips=3).names

    assert names("calibration") == names("train")
    assert names("eval") == names("test") != names("train")


def test_video_pairs_cycle_through_the_split_and_come_from_one_video(fomm_folder: Path) -> None:
    data = PairDataset(fomm_folder, "train", SIZE, seed=0, samples=4)
    videos = [read_video(fomm_folder / "train" / name, SIZE) for name in ("a.mp4", "b")]
    for i in range(4):
        item = data[i]
        assert item["video"] == i % 2
        frames = videos[item["video"]]
        for key in ("source", "driving"):
            assert (frames - item[key]).abs().amax(dim=(1, 2, 3)).min() < 1e-6
        assert "driving_eye_mask" not in item


def test_a_dataloader_batches_pairs(fomm_folder: Path) -> None:
    batch = next(iter(DataLoader(PairDataset(fomm_folder, "test", SIZE, samples=4), batch_size=4)))
    assert batch["source"].shape == (4, 3, 32, 32)
    assert batch["video"].tolist() == [0, 0, 0, 0]


def test_first_frame_protocol_drives_every_later_frame_from_the_first(fomm_folder: Path) -> None:
    batches = list(first_frame_protocol(fomm_folder, "train", SIZE, batch_size=3))
    a = read_video(fomm_folder / "train" / "a.mp4", SIZE)
    assert [b["video"].tolist() for b in batches] == [[0, 0, 0], [0], [1, 1, 1]]
    assert [b["frame"].tolist() for b in batches] == [[1, 2, 3], [4], [1, 2, 3]]
    assert torch.allclose(batches[0]["source"], a[0].expand(3, -1, -1, -1))
    assert torch.allclose(torch.cat([batches[0]["driving"], batches[1]["driving"]]), a[1:])


def test_first_frame_protocol_on_synthetic_data_carries_ground_truth() -> None:
    batches = list(first_frame_protocol("synthetic", "eval", SIZE, batch_size=8, synthetic_clips=2, frames_per_clip=4))
    assert len(batches) == 2
    assert batches[0]["driving_landmarks"].shape == (3, len(LANDMARK_NAMES), 2)
    assert torch.equal(batches[0]["source_landmarks"][0], batches[0]["source_landmarks"][2])


def test_unknown_split_is_refused() -> None:
    with pytest.raises(CompressError, match="data split 'val'"):
        PairDataset("synthetic", "val", SIZE)


def test_index_past_the_end_raises_index_error() -> None:
    with pytest.raises(IndexError):
        PairDataset("synthetic", "train", SIZE, samples=2, **SMALL)[2]


def test_missing_dataset_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(CompressError, match=f"{tmp_path / 'nope'}: video or dataset folder not found"):
        PairDataset(tmp_path / "nope", "train", SIZE)
