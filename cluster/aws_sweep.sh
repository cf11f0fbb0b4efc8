#!/usr/bin/env bash
# A sweep on the `ray up` cluster of cluster/aws.yaml, run on its head node:
#   ray exec cluster/aws.yaml --tmux "bash ~/mutransfer/cluster/aws_sweep.sh search_spaces/paper_mlp.yaml"
# Trials go to the GPU workers (4 per A10G), the driver on the head writes Parquet under
# /mnt/shared/results (EFS) and logs to the head's MLflow server.
# Extra key=value overrides are passed on to `mutransfer sweep`.
set -euo pipefail
set -a; . ~/mutransfer.env; set +a
cd ~/mutransfer
space=${1:?usage: aws_sweep.sh SPACE.yaml [key=value ...]}
shift
exec mutransfer sweep "$space" trainer.device=cuda resources.cpu=1 resources.gpu=0.25 \
    tracking.uri=http://127.0.0.1:5000 "$@" --address auto --results /mnt/shared/results
