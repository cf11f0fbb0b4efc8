"""The transfer verdict: three-valued, from intervals, with the SP control's power check.

    transfers     k's whole interval lies within ±max_drift, the largest excess regret's upper
                  bound is ≤ max_regret, and no width's η* is edge-limited
    drifts        k's interval lies outside ±max_drift, or the excess regret's lower bound
                  (simultaneous over the widths) is > max_regret
    inconclusive  anything else: an interval straddles a threshold or cannot be computed, the
                  base η* is censored at a width (between a seed's stable and diverged points),
                  or η* is edge-limited (it marks the stability edge, not the loss's minimum)

A μP group is ``transfers`` only when its SP control (the same keys with
``parametrization = sp``) ``drifts`` in the same analysis: if SP does not drift either, the
setup cannot tell transfer from drift, and the μP verdict is ``inconclusive``. The reason
names what decided the verdict.
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
    *,
    edge_limited: str = "",
    regret_note: str = "",
) -> tuple[str, str]:
    """The verdict of one group from its drift exponent and largest excess regret, each with an interval.

    Args:
        edge_limited: the widths whose η* is edge-limited (``"64,128"``), if any.
        regret_note: why the regret or its interval is missing or infinite (censored seeds, seeds
            that diverged at the base η*, too few seeds), if it is.

    Returns:
        ``(verdict, reason)``, the reason quoting the numbers that decided it.
    """
    if not math.isfinite(drift):
        return "inconclusive", "drift exponent not computable (fewer than 2 widths with an optimum)"
    k = f"k {drift:+.3f} [{drift_lo:+.3f}, {drift_hi:+.3f}]"
    r = f"excess regret {_pct(regret)} [{_pct(regret_lo)}, {_pct(regret_hi)}]"
    if drift_hi < -max_drift or drift_lo > max_drift:
        return "drifts", f"{k} lies outside ±{max_drift:g}"
    if regret_lo > max_regret:
        return "drifts", f"{r}: lower bound > {max_regret:.0%}" + (f" ({regret_note})" if regret_note else "")
    k_in = drift_lo >= -max_drift and drift_hi <= max_drift
    if k_in and regret_hi <= max_regret and not edge_limited:
        return "transfers", f"{k} within ±{max_drift:g}, {r} <= {max_regret:.0%}, no η* edge-limited"
    why = []
    if not k_in:
        why.append(f"{k} straddles ±{max_drift:g}" if math.isfinite(drift_lo) else f"{k} has no interval")
    if not regret_hi <= max_regret:
        if math.isnan(regret) and not regret_note:
            why.append("regret not computable (base η* outside another width's learning rates)")
        elif math.isfinite(regret_lo) and math.isfinite(regret_hi):
            why.append(f"{r} straddles {max_regret:.0%}")
        else:
            why.append(f"excess regret {_pct(regret)} without a bound" + (f": {regret_note}" if regret_note else ""))
    if edge_limited:
        why.append(f"η* edge-limited at width(s) {edge_limited}: it marks the stability edge, not the loss's minimum")
    return "inconclusive", "; ".join(why)


def apply_controls(groups: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Demote a μP ``transfers`` to ``inconclusive`` unless its SP control ``drifts``.

    Adds ``control_verdict`` (the SP group's verdict, or ``none`` when the sweep has no SP
    group with the same keys). Returns a new frame.
    """
    out = groups.copy()
    out["own_verdict"] = out["verdict"] if "verdict" in out else ""
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
