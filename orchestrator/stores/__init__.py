"""The stores: Parquet results, MLflow tracking, Optuna storage, and the summaries read back from them."""
