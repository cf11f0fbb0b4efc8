"""docs/: committed trials still reproduce with today's trainers (so no committed artefact goes stale).

For each committed study, two ``ok`` trials per algorithm at the smallest width (the best one and the
one at the median learning rate, of those not at the stability edge: :func:`_at_edge`) are retrained outside Ray exactly as the sweep's trainable does
(one thread, ``torch.manual_seed(seed)``, the same data subset) and their final train loss is
compared with trials.parquet. Tolerance: 1e-4 relative (float32 on one thread reproduces bit for
bit on one machine; the margin allows another CPU's kernels).
"""

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from trainers import TrainerConfig, load_dataset, make_trainer, train

DOCS = Path(__file__).resolve().parents[2] / "docs"
STUDIES = sorted(p.parent.name for p in DOCS.glob("*/trials.parquet"))
REL_TOL = 1e-4
from analysis.schema import RESULT_COLUMNS  # noqa: E402

RESULTS = {*RESULT_COLUMNS, "trial_id"}  # the columns of trials.parquet that are not the trial's config


def _at_edge(trials: pd.DataFrame) -> pd.Series:
    """Whether the next larger learning rate tried at a trial's point (its config but lr) diverged: such a
    trial sits at the stability edge, where the last bits of another CPU's kernels decide whether it
    diverges (seen: crossed_pc_ce's best PC trial, lr 3.15, 0.473 on the Intel Xeon it ran on, ∞ on an
    AMD EPYC Zen 3). Those are not retrained: they test the CPU, not the trainers."""
    config = [c for c in trials.columns if c not in RESULTS and c != "lr"]
    edge = pd.Series(False, index=trials.index)
    for _, point in trials.sort_values("lr").groupby(config, dropna=False, sort=False):
        nxt = point.status.shift(-1)
        edge[point.index] = (nxt == "diverged").to_numpy()
    return edge


def _picks(trials: pd.DataFrame) -> list[dict]:
    out = []
    inside = trials[(trials.status == "ok") & ~_at_edge(trials)]
    for _, t in inside.groupby("algorithm"):
        t = t[t.width == t.width.min()].sort_values("lr")
        out.append(t.loc[t.final_train_loss.idxmin()].to_dict())
        out.append(t.iloc[len(t) // 2].to_dict())
    return out


def _retrain(row: dict, fixed: dict, data_cfg: dict, train_cfg: dict) -> float:
    """The trial's final train loss, retrained: the sweep's fixed trainer keys, then the row's swept ones."""
    fields = {f.name for f in dataclasses.fields(TrainerConfig)}
    tc = TrainerConfig(**{**(fixed or {}), **{k: v for k, v in row.items() if k in fields and not pd.isna(v)}})
    torch.set_num_threads(1)
    data = load_dataset(
        data_cfg["dataset"],
        data_cfg.get("subset") or None,
        data_cfg.get("test_subset") or None,
        dtype=torch.float32,
        seed=tc.seed,
    ).to(tc.torch_device, tc.torch_dtype)
    torch.manual_seed(tc.seed)
    trainer = make_trainer(tc, data.input_dim, data.output_dim)
    history = train(trainer, data, int(train_cfg["epochs"]), int(train_cfg["batch_size"]), seed=tc.seed)
    return float(history[-1]["train_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_committed_trials_retrain_to_their_committed_losses(study):
    cfg = yaml.safe_load((DOCS / study / "sweep.yaml").read_text())
    trials = pd.read_parquet(DOCS / study / "trials.parquet")
    picks = _picks(trials)
    assert len(picks) >= 2 * trials.algorithm.nunique()
    for row in picks:
        got = _retrain(row, cfg.get("trainer"), cfg["data"], cfg["train"])
        assert got == pytest.approx(row["final_train_loss"], rel=REL_TOL), (
            f"{study}: trial {row['trial_id']} ({row['algorithm']}/{row['parametrization']} width {row['width']} "
            f"lr {row['lr']:.4g}) retrains to {got:.6g}, committed {row['final_train_loss']:.6g}"
        )


def test_at_edge_marks_the_trial_below_a_diverged_lr_at_its_own_point():
    rows = [(0, 0.1, "ok"), (0, 0.2, "ok"), (0, 0.4, "diverged"), (1, 0.1, "ok"), (1, 0.2, "ok")]
    t = pd.DataFrame([{"algorithm": "pc", "seed": s, "lr": lr, "status": st} for s, lr, st in rows])
    assert _at_edge(t).tolist() == [False, True, False, False, False]
