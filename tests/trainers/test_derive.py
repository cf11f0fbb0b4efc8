"""derive: from SP (or a wrong table), measurement alone recovers the shipped μP tables after snapping.

CPU times in the slow markers are the process CPU of the search (one torch thread, as the test suite
sets) measured on the shared 2-CPU machine, widths 128..1024, float64, lr 1e-4; wall times were
measured while other jobs loaded the machine.
"""

import time

import numpy as np
import pytest

from trainers import DESIDERATA, Table, TrainerConfig, derive, resolve_table
from trainers._derive import snap, table_with, using_table
from trainers._param import _TABLES

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _cfg(algorithm="bp", optimizer="sgd", **kw):
    return TrainerConfig(
        algorithm=algorithm,
        optimizer=optimizer,
        parametrization="sp",
        lr=1e-4,
        base_width=64,
        dtype="float64",
        device="cpu",
        **kw,
    )


def _rows(table: Table) -> tuple:
    return tuple(
        (r, table.rule(r).init_var, table.rule(r).multiplier, table.rule(r).lr) for r in ("input", "hidden", "output")
    )


def _recover(cfg, start=None, budget_cpu_s=300.0, confirm=True):
    """Derive from ``start`` (SP by default): (the derivation, what differs from the shipped μP — empty
    when every searched exponent equals it, unsearched extras are the start's, the confirming check
    passed and the search stayed within its CPU budget)."""
    target = resolve_table(cfg.replace(parametrization="mup"))
    start = start if start is not None else resolve_table(cfg)
    t0 = time.process_time()
    d = derive(cfg, start)
    cpu = time.process_time() - t0
    print(f"{d.table.name}: {d.evaluations} measurements, {d.cpu_s:.1f} s CPU of measurement, {cpu:.1f} s CPU")
    searched = DESIDERATA[cfg.algorithm].extras if cfg.algorithm in DESIDERATA else ()
    kept = [k for k in target.extras if k not in searched]  # not searched: carried over from the start
    problems = []
    if _rows(d.table) != _rows(target):
        problems.append(f"rows {_rows(d.table)} != shipped {_rows(target)}; history {d.history}")
    if {k: d.table.extra(k) for k in searched} != {k: target.extra(k) for k in searched}:
        problems.append(f"searched extras {dict(d.table.extras)} != shipped {dict(target.extras)}")
    if {k: d.table.extra(k) for k in kept} != {k: start.extra(k) for k in kept}:
        problems.append(f"unsearched extras {dict(d.table.extras)} != the start's {dict(start.extras)}")
    if confirm and not d.passed:
        problems.append(f"confirming coordinate check failed: {d.final.slopes}")
    if cpu >= budget_cpu_s:
        problems.append(f"{cpu:.0f} s CPU >= {budget_cpu_s:.0f} s")
    return d, problems


def test_snap_rounds_to_half_integers_and_table_with_sets_rows_and_extras():
    assert snap([0.24, 0.26, -0.74, -1.3]).tolist() == [0.0, 0.5, -0.5, -1.5]
    base = resolve_table(_cfg(algorithm="pc"))
    t = table_with(base, ("output.init_var", "hidden.lr", "extras.inference_lr"), [-1.0, -0.5, 0.5])
    assert t.output.init_var == -1.0 and t.hidden.lr == -0.5 and t.extra("inference_lr") == 0.5
    assert t.output.multiplier == 0.0 and t.extra("gamma_output") == base.extra("gamma_output")


def test_using_table_replaces_the_registered_table_only_inside_the_block():
    cfg = _cfg()
    shipped = resolve_table(cfg)
    other = Table("other", shipped.input, shipped.hidden, shipped.output)
    with using_table(cfg, other):
        assert resolve_table(cfg) is other
    assert resolve_table(cfg) is shipped
    with pytest.raises(RuntimeError), using_table(cfg.replace(optimizer="adam"), other):
        raise RuntimeError
    assert resolve_table(cfg.replace(optimizer="adam")).name == "bp/sp/adam"
    assert all(t.name != "other" for t in _TABLES["bp"].values())


def test_bp_sgd_mup_is_recovered_from_sp():
    d, problems = _recover(_cfg())
    assert not problems, problems
    assert d.unpinned == []
    assert d.max_abs_slope < 0.1


def test_a_table_with_a_wrong_exponent_moves_every_slope_it_should():
    # the measurement itself: BP's μP with the hidden lr one power too large has hidden slopes ≈ +1
    from trainers._derive import measure

    cfg = _cfg()
    mup = resolve_table(cfg.replace(parametrization="mup"))
    wrong = table_with(mup, ("hidden.lr",), [1.0])
    m = measure(cfg, wrong, widths=(128, 256, 512))
    assert 0.8 < m.slopes["own layers.1 @1"] < 1.2
    assert abs(m.slopes["own layers.0 @1"]) < 0.15
    assert abs(m.slopes["init layers.1"]) < 0.1


@pytest.mark.slow(reason="measured 5.9 s CPU of search, 19 s wall under load")
def test_bp_adam_mup_is_recovered_from_sp():
    _, problems = _recover(_cfg(optimizer="adam"))
    assert not problems, problems


@pytest.mark.slow(reason="measured 30 s CPU of search, 90 s wall under load")
@pytest.mark.long  # PC's derive is covered at gamma_bar_L = -1
def test_pc_mup_at_gamma_bar_0_is_recovered_from_sp():
    _, problems = _recover(_cfg(algorithm="pc", gamma_bar_L=0.0))
    assert not problems, problems


@pytest.mark.slow(reason="measured 44 s CPU of search (continuation: γ̄_L = 0 first), 170 s wall under load")
def test_pc_mup_at_gamma_bar_minus_1_is_recovered_from_sp():
    _, problems = _recover(_cfg(algorithm="pc", gamma_bar_L=-1.0))
    assert not problems, problems


@pytest.mark.slow(reason="measured 14 s CPU of search, 34 s wall under load")
def test_bp_mup_given_to_pc_at_gamma_bar_minus_1_is_corrected():
    cfg = _cfg(algorithm="pc", gamma_bar_L=-1.0)
    bp = resolve_table(cfg.replace(algorithm="bp", parametrization="mup"))
    start = Table("bp's mup", bp.input, bp.hidden, bp.output, resolve_table(cfg).extras)
    d, problems = _recover(cfg, start)
    assert not problems, problems
    assert d.history[0]["max_abs_slope"] > 0.8  # the start was wrong, and measured as wrong
    assert np.isclose(d.table.output.lr, -2.0) and np.isclose(bp.output.lr, -1.0)


@pytest.mark.slow(reason="measured 11 s CPU of search, 36 s wall under load")
def test_tp_mup_is_recovered_from_sp():
    # every TP extra but the ridge exponents, which only feedback=regression* uses (kept at SP's 0;
    # the shipped μP has feedback_hidden_ridge = 1)
    d, problems = _recover(_cfg(algorithm="tp"), confirm=False)
    assert not problems, problems
    assert "extras.target_step" in d.unknowns and "extras.feedback_hidden_lr" in d.unknowns
    forward = {k: v for k, v in d.final.slopes.items() if not k.startswith("feedback")}
    assert max(abs(v) for v in forward.values()) < d.tolerance, forward
    # the feedback maps' own changes (one noise draw, one seed) are the noisiest probe: measured
    # -0.17 and -0.22 for g1 at widths 128..1024, -0.08 and -0.12 at 256..2048 (g2 within ±0.2)
    feedback = {k: v for k, v in d.final.slopes.items() if k.startswith("feedback")}
    assert max(abs(v) for v in feedback.values()) < 0.3, feedback
