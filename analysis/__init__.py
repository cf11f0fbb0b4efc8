"""mutransfer analysis: reads Parquet/MLflow logs, computes transfer metrics, plots, reports. Never imports Ray."""

from .coord_plot import plot_coord_check

__all__ = ["plot_coord_check"]
