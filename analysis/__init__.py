"""mutransfer analysis: reads Parquet/MLflow logs, computes transfer metrics, plots, reports. Never imports Ray.

The public names below are imported on first use (PEP 562), so that ``import analysis.schema`` (the driver's
group keys and objective rule) does not load pandas and matplotlib: a command's start-up stays short.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the submodule that defines it
_EXPORTS = {
    "plot_coord_check": "coord_plot",
    "plot_coord_grid": "coord_plot",
    "LogError": "load",
    "SweepLogs": "load",
    "load_sweep": "load",
    "read_mlflow": "load",
    "planted_trials": "planted",
    "plot_learning_curves": "plots",
    "plot_loss_vs_lr": "plots",
    "plot_lr_star_vs_width": "plots",
    "summary_json": "report",
    "summary_table": "report",
    "verdict_table": "report",
    "write_report": "report",
    "TransferResult": "transfer",
    "analyze": "transfer",
    "optimum": "transfer",
    "verdict": "transfer",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
