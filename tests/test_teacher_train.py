"""`compress teacher train`: any family's teacher, trained with that family's own objective."""

from __future__ import annotations

import pytest
import yaml

from compress.errors import CompressError
from compress.families.loading import load_model
from compress.teacher_train import load_training, train_command, train_teacher


def spec(tmp_path, **fields):
    path = tmp_path / "teacher.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "family": "generic",
                "config": "teacher-32",
                "steps": 3,
                "batch_size": 2,
                "train_samples": 4,
                "eval_batches": 1,
                **fields,
            }
        )
    )
    return path


def test_a_generic_teacher_trains_with_its_family_objective_and_reports_task_metrics(tmp_path):
    model, report = train_teacher(load_training(spec(tmp_path)), progress=False)
    assert report["steps"] == 3 and set(report["held_out"]) == {"psnr", "l1", "ssim"}


def test_the_trained_teacher_is_saved_as_a_teacher_of_its_family(tmp_path):
    train_command(spec(tmp_path), tmp_path / "teacher.safetensors", steps=1)
    _, meta = load_model(tmp_path / "teacher.safetensors")
    assert (meta["family"], meta["kind"]) == ("generic", "teacher")


def test_objective_weights_are_checked_against_the_family_schema(tmp_path):
    training = load_training(spec(tmp_path, family="fomm", config="demo-64", weights={"reconstructon": 1.0}))
    with pytest.raises(CompressError, match="fomm loss weights: reconstructon"):
        train_teacher(training, progress=False)


def test_provenance_names_no_folder_outside_the_working_directory(tmp_path):
    train_command(spec(tmp_path), tmp_path / "teacher.safetensors", steps=1)
    _, meta = load_model(tmp_path / "teacher.safetensors")
    assert meta["extra"]["source"] == "compress teacher train teacher.yaml --out teacher.safetensors"


def test_the_shipped_demo_teachers_record_commands_that_rerun_in_the_repository():
    from pathlib import Path

    from compress.checkpoints import read_model_meta

    root = Path(__file__).parent.parent
    for path in sorted((root / "recipes" / "teachers").glob("*.safetensors")):
        command = read_model_meta(path)["extra"]["source"].split()
        spec_path, out = command[3], command[5]
        assert (root / spec_path).is_file() and out == path.relative_to(root).as_posix(), command
