"""One module per model: how it is fitted, exported, parity-checked and evaluated.

``training.specs.<name>``, one for each name in :data:`models.catalog.MODEL_NAMES`, holds that
model's ``fit(cfg, data, ctx=None) -> Trained`` (a :class:`training.base.Trainer`) and its own
helpers. :data:`TRAINERS` maps each name to its ``fit`` in ``MODEL_NAMES`` order, the order
:func:`training.train.fit_all` runs them in: the classifier, last, learns from the candidates
the three before it raise.
"""

from __future__ import annotations

from importlib import import_module

from models.catalog import MODEL_NAMES
from training.base import Trainer

TRAINERS: dict[str, Trainer] = {name: import_module(f"{__name__}.{name}").fit for name in MODEL_NAMES}
