"""Fixtures of the scoring-logic tests: the trained versions loaded once, and a config without time bounds."""

from __future__ import annotations

import pytest

from common.config import VigilConfig
from models.pipeline import ModelBundle


@pytest.fixture(scope="module")
def models(trained_store) -> ModelBundle:
    return ModelBundle.load(trained_store)


@pytest.fixture(scope="module")
def cfg() -> VigilConfig:
    """The shipped defaults, with the replayed scenarios' old timestamps accepted."""
    return VigilConfig.load(overrides={"validation": {"max_past_s": None, "max_future_s": None}})
