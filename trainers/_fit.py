"""The one log-log slope fit of the package: the exponent p in values ∝ width^p."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def loglog_slope(widths: Iterable[float], values: Iterable[float]) -> float:
    """Least-squares slope of log2 ``values`` against log2 ``widths``.

    Points where either logarithm is not finite (a zero, negative or non-finite value) are
    left out; NaN when fewer than two points remain.
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # log2 of 0 or < 0: left out below
        x, y = np.log2(np.asarray(list(widths), float)), np.log2(np.asarray(list(values), float))
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.polyfit(x[ok], y[ok], 1)[0]) if ok.sum() >= 2 else float("nan")
