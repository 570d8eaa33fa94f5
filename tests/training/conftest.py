"""Fixtures of the training tests."""

from __future__ import annotations

import pytest
from retrain_helpers import SEED, tiny_specs

from training.base import TrainConfig
from training.train import run_training


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):  # type: ignore[no-untyped-def]
    """The baseline run (no retraining flags) on tiny scenarios that retraining tests compare with."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TrainConfig, "specs", tiny_specs)
        root = tmp_path_factory.mktemp("baseline")
        run = run_training(root, seed=SEED, quick=True, runs_dir=None, progress=False, workers=1)
    return root, run
