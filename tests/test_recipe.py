"""The recipe schema: validation errors name the file, key path and YAML line; --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.errors import CompressError
from compress.recipe import list_recipes, load_recipe


def test_valid_recipe_fills_stage_defaults(write_recipe):
    recipe = load_recipe(write_recipe([{"export": {"opset": 18}}, "bundle"]))
    assert [s.name for s in recipe.stages] == ["export", "bundle"]
    assert recipe.stage("export").config.opset == 18
    assert recipe.stage("export").config.minimum_deployment_target == "iOS16"


def test_unknown_top_level_key_names_file_key_and_line(write_recipe):
    path = write_recipe(["export"], stagez=[])
    with pytest.raises(CompressError) as exc:
        load_recipe(path)
    assert f"{path}:" in str(exc.value) and "stagez: unknown key" in str(exc.value)


def test_unknown_stage_field_names_its_path_and_line(write_recipe):
    path = write_recipe([{"lint": {}}, {"export": {"opsett": 17}}])
    with pytest.raises(CompressError, match=r":\d+: stages\[1\]\.export\.opsett: unknown key"):
        load_recipe(path)


def test_wrong_type_is_reported(write_recipe):
    with pytest.raises(CompressError, match=r"stages\[0\]\.distill\.steps: .*integer"):
        load_recipe(write_recipe([{"distill": {"steps": "many"}}]))


def test_unknown_stage_is_reported(write_recipe):
    with pytest.raises(CompressError, match="unknown stage 'exprt'"):
        load_recipe(write_recipe(["exprt"]))


def test_version_must_be_semver(write_recipe):
    with pytest.raises(CompressError, match="not semver"):
        load_recipe(write_recipe(["export"], version="1.0"))


def test_missing_checkpoint_file_is_named(write_recipe):
    with pytest.raises(CompressError, match=r"teacher\.checkpoint: file not found: .*nope\.pth"):
        load_recipe(write_recipe(["export"], teacher={"checkpoint": "nope.pth"}))


def test_set_overrides_a_stage_field_type_checked(write_recipe):
    path = write_recipe([{"distill": {"steps": 10}}])
    assert load_recipe(path, ["stages.distill.steps=200"]).stage("distill").config.steps == 200
    with pytest.raises(CompressError, match="steps"):
        load_recipe(path, ["stages.distill.steps=abc"])


def test_set_on_a_missing_stage_is_an_error(write_recipe):
    with pytest.raises(CompressError, match="no stage 'prune'"):
        load_recipe(write_recipe(["export"]), ["stages.prune.round_to=4"])


def test_set_needs_key_equals_value(write_recipe):
    with pytest.raises(CompressError, match="KEY=VALUE"):
        load_recipe(write_recipe(["export"]), ["stages.export.opset"])


def test_recipe_hash_changes_with_config(write_recipe):
    path = write_recipe([{"distill": {"steps": 10}}])
    assert load_recipe(path).sha256() != load_recipe(path, ["stages.distill.steps=11"]).sha256()


def test_list_recipes_one_line_each(write_recipe, tmp_path):
    write_recipe(["export"], description="a tiny recipe")
    rows = list_recipes(tmp_path)
    assert len(rows) == 1 and "generic: a tiny recipe" in rows[0][1]


def test_docs_recipe_reference_matches_the_schema():
    from pathlib import Path

    from compress.recipe import schema_markdown

    doc = Path(__file__).parent.parent / "docs" / "recipes.md"
    assert doc.read_text().strip() == schema_markdown().strip(), "run: python -m compress.recipe > docs/recipes.md"


def test_a_shipped_recipe_loads_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe("fomm-mobile-demo")
    assert recipe.name == "fomm-mobile-demo" and recipe.resolve(recipe.teacher.checkpoint).is_file()


def test_compress_recipes_lists_the_shipped_recipes_from_any_folder(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "compress", "recipes"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0 and "fomm-mobile-demo  fomm:" in proc.stdout


def test_every_shipped_recipe_file_is_package_data():
    import fnmatch
    import tomllib

    root = Path(__file__).parent.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["compress"]
    shipped = [
        p.relative_to(root / "compress").as_posix() for p in (root / "compress" / "recipes").rglob("*") if p.is_file()
    ]
    assert shipped and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in shipped)
