"""What a verify spends, read from the committed verify studies: the priors of ``--dry-run``'s plan.

A plan knows before running how many trials the bracket holds, but not how many refinement adds nor how
many trials diverge (and stop early). Both are measured here on the verify studies committed in ``docs/``
(a study directory with ``trials.parquet``, ``sweep.yaml`` and ``base_lr.json``):

* **refinement per point**: (trials − bracket × points) / points, where a point is a trial's config without
  its learning rate (group, width, parametrization, seed); the plan expects ``2 h + REFINE_EXTRA`` per point,
  ``h`` the halvings from an octave to ``verify.resolution`` (:data:`REFINE_EXTRA`: the median of
  ``refinement per point − 2 h``);
* **spend**: Σ ``wall_s`` / Σ (the mean ``wall_s`` of the study's ok trials of the same kind): the share of
  an undiverged trial's seconds a verify's trial spends on average (:data:`SPEND`: the median).

and, from the studies whose trials carry their start and end (``started_at``, ``finished_at``), what a
Tune run costs beyond training:

* **per trial**: (slots × busy time − Σ ``wall_s``) / trials, where busy time is the span from the first
  trial's start to the last one's end less the gaps when no trial ran, and slots the most trials that ran at
  once (:data:`PER_TRIAL_S`: the median);
* **between Tune runs**: the gaps of more than a second when no trial ran (verify's rounds: the analysis that
  picks the next learning rates, then the next Tune run's start; :data:`ROUND_GAP_S`: the median).

The plan uses the first two where this host has no measured ratio real / calibrated, the last two where no
earlier run on this host measured its overheads (:mod:`.overheads`).
``tests/orchestrator/engine/test_priors.py`` re-derives both from the committed studies and compares.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import schema

REFINE_EXTRA = 1.38  # median over the 13 verify studies committed in docs/ (0.65 … 3.28)
SPEND = 0.71  # the same studies' median (0.63 … 0.86)
PER_TRIAL_S = 0.11  # median over the 8 committed studies with trial times (0.073 … 0.183)
ROUND_GAP_S = 9.3  # median over their 34 gaps of more than a second (6.0 … 19.2)

# columns of trials.parquet that are results or bookkeeping, not the trial's config
RESULT_COLUMNS = frozenset({*schema.RESULT_COLUMNS, "trial_id"})


@dataclass(frozen=True)
class StudySpend:
    """One verify study's measured refinement per point and spend."""

    name: str
    points: int
    trials: int
    bracket: int  # learning rates per point in the bracket
    halvings: int
    refine_per_point: float
    spend: float

    @property
    def refine_extra(self) -> float:
        """Refinement trials per point beyond ``2 h``."""
        return self.refine_per_point - 2 * self.halvings


def halvings(resolution: float) -> int:
    """Halvings from an octave down to ``resolution`` (in octaves)."""
    return max(0, math.ceil(math.log2(1.0 / resolution))) if resolution < 1 else 0


def study_spend(study_dir: str | Path) -> StudySpend:
    """Measure one committed verify study (see the module doc)."""
    from omegaconf import OmegaConf

    study_dir = Path(study_dir)
    trials = pd.read_parquet(study_dir / "trials.parquet")
    verify = OmegaConf.to_container(OmegaConf.load(study_dir / "sweep.yaml")).get("verify") or {}
    bracket = len(verify.get("bracket", [-2, -1, 0, 1, 2]))
    keys = [c for c in trials.columns if c not in RESULT_COLUMNS and c != "lr"]
    points = trials.groupby(keys, dropna=False).ngroups
    kind = [c for c in keys if c not in ("seed", "parametrization")]
    ok_mean = trials[trials.status == "ok"].groupby(kind, dropna=False).wall_s.mean().rename("ok_mean")
    joined = trials.join(ok_mean, on=kind)
    known = joined.ok_mean.notna()  # a kind whose every trial diverged has no undiverged cost to compare with
    return StudySpend(
        name=study_dir.name,
        points=points,
        trials=len(trials),
        bracket=bracket,
        halvings=halvings(float(verify.get("resolution", 0.25))),
        refine_per_point=(len(trials) - bracket * points) / points,
        spend=float(joined.wall_s[known].sum() / joined.ok_mean[known].sum()),
    )


@dataclass(frozen=True)
class StudyOverheads:
    """One study's Tune overheads, from its trials' start and end times."""

    name: str
    slots: int
    per_trial_s: float
    gaps: tuple[float, ...]


def study_overheads(study_dir: str | Path) -> StudyOverheads | None:
    """Measure one committed study's overheads (see the module doc); None when its trials carry no times."""
    trials = pd.read_parquet(study_dir := Path(study_dir) / "trials.parquet")
    if "started_at" not in trials.columns:
        return None
    timed = trials.dropna(subset=["started_at", "finished_at"])
    if timed.empty:
        return None
    events = sorted([(float(t), 1) for t in timed.started_at] + [(float(t), -1) for t in timed.finished_at])
    running, slots, last, gaps = 0, 0, None, []
    for when, change in events:
        if running == 0 and last is not None:
            gaps.append(when - last)
        running += change
        slots, last = max(slots, running), when
    busy = timed.finished_at.max() - timed.started_at.min() - sum(gaps)
    return StudyOverheads(
        name=study_dir.parent.name,
        slots=slots,
        per_trial_s=float((slots * busy - timed.wall_s.sum()) / len(timed)),
        gaps=tuple(g for g in gaps if g > 1.0),
    )


def verify_studies(docs: str | Path) -> list[Path]:
    """The committed verify studies under ``docs`` (directories with trials, sweep file and base_lr.json)."""
    return sorted(
        d
        for d in Path(docs).iterdir()
        if all((d / f).is_file() for f in ("trials.parquet", "sweep.yaml", "base_lr.json"))
    )


def derive(docs: str | Path) -> tuple[float, float, list[StudySpend]]:
    """``(refine_extra, spend, per-study)``: the medians the plan's constants should hold."""
    studies = [study_spend(d) for d in verify_studies(docs)]
    return (
        statistics.median(s.refine_extra for s in studies),
        statistics.median(s.spend for s in studies),
        studies,
    )


def derive_overheads(docs: str | Path) -> tuple[float, float, list[StudyOverheads]]:
    """``(per_trial_s, round_gap_s, per-study)`` over the committed studies with trial times."""
    studies = [
        o for d in sorted(Path(docs).iterdir()) if (d / "trials.parquet").is_file() for o in [study_overheads(d)] if o
    ]
    return (
        statistics.median(o.per_trial_s for o in studies),
        statistics.median(g for o in studies for g in o.gaps),
        studies,
    )


if __name__ == "__main__":  # python -m orchestrator.engine.priors [DOCS]: the table behind the constants
    import sys

    extra, spend, rows = derive(sys.argv[1] if len(sys.argv) > 1 else "docs")
    print("| study | points | trials | resolution halvings | refinement / point | spend |")
    print("|---|---|---|---|---|---|")
    for s in rows:
        print(f"| {s.name} | {s.points} | {s.trials} | {s.halvings} | {s.refine_per_point:.2f} | {s.spend:.2f} |")
    print(f"\nmedian refinement per point beyond 2h: {extra:.2f} (REFINE_EXTRA {REFINE_EXTRA}); ")
    print(f"median spend: {spend:.2f} (SPEND {SPEND})\n")
    per_trial, gap, timed = derive_overheads(sys.argv[1] if len(sys.argv) > 1 else "docs")
    print("| study | slots | overhead per trial | gaps between Tune runs |\n|---|---|---|---|")
    for o in timed:
        print(f"| {o.name} | {o.slots} | {o.per_trial_s:.3f} s | {', '.join(f'{g:.1f}' for g in o.gaps)} s |")
    print(
        f"\nmedian per trial: {per_trial:.3f} s (PER_TRIAL_S {PER_TRIAL_S}); median gap {gap:.1f} s (ROUND_GAP_S {ROUND_GAP_S})"
    )
