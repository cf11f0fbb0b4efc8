"""The algorithm registry: name -> trainer class. Imports nothing, so that every module may read it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TRAINERS: dict[str, Any] = {}  # name -> Trainer subclass (filled by register_trainer)


def register_trainer(algorithm: str) -> Callable[[type], type]:
    """Class decorator: make ``make_trainer`` build this class for ``algorithm``.

    Also what ``TrainerConfig`` accepts as ``algorithm``; give its SP/μP tables with
    ``register_table``. Works from any module (see docs/EXTENDING.md).
    """

    def deco(cls: type) -> type:
        TRAINERS[algorithm] = cls
        return cls

    return deco
