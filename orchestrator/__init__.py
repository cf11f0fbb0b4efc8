"""mutransfer orchestrator: runs the studies that trainers/ defines and analysis/ judges.

- ``cli``: the ``mutransfer`` command line (one module per group of commands).
- ``spec``: the sweep-file model (loading, validation, grid expansion, group and axis keys).
- ``engine``: the run engine (one session per command, its lock, packs of trials on Ray Tune, plans).
- ``stores``: where results live (Parquet parts, MLflow, Optuna storage, run summaries).
- ``studies``: the procedures a command runs on the engine (sweep, tune-base, verify).
- ``errors``: the exceptions every part raises and the exit codes they map to.
"""
