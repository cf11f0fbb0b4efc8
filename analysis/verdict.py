"""The transfer verdict: three-valued, from intervals, with the SP control's power check.

    transfers     k's whole interval lies within ±max_drift and regret's upper bound ≤ max_regret
    drifts        k's interval lies outside ±max_drift, or regret's lower bound > max_regret
    inconclusive  anything else (the intervals straddle a threshold, or cannot be computed)

A μP group is ``transfers`` only when its SP control (the same keys with
``parametrization = sp``) ``drifts`` in the same analysis: if SP does not drift either, the
setup cannot tell transfer from drift, and the μP verdict is ``inconclusive``.
"""

from __future__ import annotations

import math

import pandas as pd

VERDICTS = ("transfers", "drifts", "inconclusive")
CONTROL, JUDGED = "sp", "mup"


def _pct(v: float) -> str:
    return f"{v:.2%}" if math.isfinite(v) else ("inf" if v > 0 else "n/a")  # NaN > 0 is False: n/a


def verdict(
    drift: float,
    drift_lo: float,
    drift_hi: float,
    regret: float,
    regret_lo: float,
    regret_hi: float,
    max_drift: float = 0.2,
    max_regret: float = 0.05,
) -> tuple[str, str]:
    """The verdict of one group from its drift exponent and max regret, each with an interval.

    Returns:
        ``(verdict, reason)``, the reason quoting the numbers that decided it.
    """
    if not math.isfinite(drift):
        return "inconclusive", "drift exponent not computable (fewer than 2 widths with an optimum)"
    k = f"k {drift:+.3f} [{drift_lo:+.3f}, {drift_hi:+.3f}]"
    r = f"max regret {_pct(regret)} [{_pct(regret_lo)}, {_pct(regret_hi)}]"
    if drift_hi < -max_drift or drift_lo > max_drift:
        return "drifts", f"{k} lies outside ±{max_drift:g}"
    if regret_lo > max_regret:
        return "drifts", f"{r}: lower bound > {max_regret:.0%}"
    if drift_lo >= -max_drift and drift_hi <= max_drift and regret_hi <= max_regret:
        return "transfers", f"{k} within ±{max_drift:g} and {r} <= {max_regret:.0%}"
    why = []
    if not (drift_lo >= -max_drift and drift_hi <= max_drift):
        why.append(f"{k} straddles ±{max_drift:g}")
    if not regret_hi <= max_regret:
        if math.isnan(regret_lo) and math.isnan(regret_hi) and not math.isnan(regret):
            why.append(f"max regret {_pct(regret)} has no interval (one seed)")
        elif math.isnan(regret):
            why.append("max regret not computable (base η* outside another width's learning rates)")
        else:
            why.append(f"{r} straddles {max_regret:.0%}")
    return "inconclusive", "; ".join(why)


def apply_controls(groups: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Demote a μP ``transfers`` to ``inconclusive`` unless its SP control ``drifts``.

    Adds ``control_verdict`` (the SP group's verdict, or ``none`` when the sweep has no SP
    group with the same keys). Returns a new frame.
    """
    out = groups.copy()
    out["control_verdict"] = ""
    if out.empty or "parametrization" not in keys:
        return out
    other = [k for k in keys if k != "parametrization"]
    sp = {tuple(r[k] for k in other): r["verdict"] for _, r in out[out.parametrization == CONTROL].iterrows()}
    for i, r in out.iterrows():
        if r["parametrization"] != JUDGED:
            continue
        control = sp.get(tuple(r[k] for k in other), "none")
        out.at[i, "control_verdict"] = control
        if r["verdict"] == "transfers" and control != "drifts":
            why = "no SP control in this sweep" if control == "none" else f"its SP control is '{control}', not 'drifts'"
            out.at[i, "verdict"] = "inconclusive"
            out.at[i, "verdict_reason"] = (
                f"the setup cannot tell transfer from drift ({why}); on its own: {r['verdict_reason']}"
            )
    return out
