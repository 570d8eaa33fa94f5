"""`python -m training`: help, ensure and error exits; `python -m bench.models`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.models import main as bench_models
from models.artifact import ArtifactStore
from models.catalog import MODEL_NAMES
from training.__main__ import main


@pytest.mark.parametrize("command", ["train", "ensure"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--store" in out and "--quick" in out and "--seed" in out


def test_ensure_does_nothing_when_every_model_exists(trained_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {n: ArtifactStore(trained_store).versions(n) for n in MODEL_NAMES}
    assert main(["ensure", "--store", str(trained_store)]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert {n: ArtifactStore(trained_store).versions(n) for n in MODEL_NAMES} == before


def test_a_version_with_another_feature_schema_counts_as_missing(trained_store: Path, tmp_path: Path) -> None:
    """A store made before a model's features changed: `ensure` (make run) trains again instead of
    leaving the job a version it would refuse."""
    import shutil

    from training.train import missing_models

    store = tmp_path / "store"
    shutil.copytree(trained_store, store)
    assert missing_models(store) == []
    latest = ArtifactStore(store).latest("classifier")
    path = store / "classifier" / latest / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["feature_schema"] = manifest["feature_schema"][:-1]
    path.write_text(json.dumps(manifest))
    assert missing_models(store) == ["classifier"]


def test_bench_models_prints_latencies(trained_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_models(["--store", str(trained_store), "-n", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == set(MODEL_NAMES)
    assert all(v > 0 for m in out.values() for v in m.values())


def test_bad_arguments_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--store", str(tmp_path), "--seed", "-4", "--no-progress"]) == 2
    assert "The 'seed' parameter of TrainConfig must be an integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fly"])
