"""mutransfer analysis: reads Parquet/MLflow logs, computes transfer metrics, plots, reports. Never imports Ray."""

from .coord_plot import plot_coord_check, plot_coord_grid

__all__ = ["plot_coord_check", "plot_coord_grid"]
from .load import LogError, SweepLogs, load_sweep, read_mlflow  # noqa: E402
from .planted import planted_trials  # noqa: E402
from .plots import plot_learning_curves, plot_loss_vs_lr, plot_lr_star_vs_width  # noqa: E402
from .report import summary_json, summary_table, verdict_table, write_report  # noqa: E402
from .transfer import TransferResult, analyze, optimum, verdict  # noqa: E402

__all__ += [
    "LogError",
    "SweepLogs",
    "load_sweep",
    "read_mlflow",
    "planted_trials",
    "plot_learning_curves",
    "plot_loss_vs_lr",
    "plot_lr_star_vs_width",
    "summary_json",
    "summary_table",
    "verdict_table",
    "write_report",
    "TransferResult",
    "analyze",
    "optimum",
    "verdict",
]
