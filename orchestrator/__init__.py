"""mutransfer orchestrator: the CLI, config loading, Ray Tune, Optuna and tracking."""
