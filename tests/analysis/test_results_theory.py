"""analysis.results_theory: the fixed-width claims rows decide from the width slopes they print."""

import pandas as pd
import pytest

from analysis.results_theory import fixed_width_block, pc_distance_row, regime, tp_kernel_row

WIDTHS = (64, 128, 256, 512, 1024)


@pytest.mark.parametrize(
    ("slope", "word"), [(0.0, "flat"), (-0.1, "flat"), (-0.11, "between"), (-0.39, "between"), (-0.4, "kernel")]
)
def test_regime_reads_a_slope(slope, word):
    assert regime(slope) == word
    assert regime(float("nan")) == "n/a"


def _profile(tp_slopes: dict[str, float], steps=(1, 50)) -> pd.DataFrame:
    rows = []
    for table, slope in tp_slopes.items():
        for seed in (0, 1, 2):
            for step in steps:
                for w in WIDTHS:
                    for layer in ("layers.1", "layers.2"):
                        dphi = (1 + 0.01 * seed) * w**slope if layer == "layers.2" else 1.0
                        rows.append(
                            dict(
                                algorithm="tp",
                                parametrization=table,
                                seed=seed,
                                step=step,
                                width=w,
                                layer=layer,
                                rms_dphi=dphi,
                            )
                        )
    return pd.DataFrame(rows)


def test_tp_row_says_yes_only_when_every_table_keeps_features_moving():
    assert "| **yes**" in tp_kernel_row(_profile({"mup": 0.0, "ntk": -0.05}))
    row = tp_kernel_row(_profile({"mup": 0.0, "tp_ntk_sgd": -0.5}))
    assert "| **no**: tp_ntk_sgd freezes" in row and "−0.50 [−0.50, −0.50] at step 50 (kernel)" in row
    assert "| **partly**: TP mup flat (+0.00); TP x between (−0.30)" in tp_kernel_row(_profile({"mup": 0.0, "x": -0.3}))


def _pc(slope_upper: float) -> pd.DataFrame:
    widths = (64, 128, 256, 512, 1024, 2048)
    rows = []
    for depth in (3, 5):
        for seed in (0, 1, 2):
            for w in widths:
                v = 0.1 * (w / 64) ** -0.5 if w <= 512 else 0.1 * 8**-0.5 * (w / 512) ** slope_upper
                rows.append(dict(depth=depth, c=1.0, seed=seed, width=w, one_minus_cos=v * (1 + 0.01 * seed)))
    return pd.DataFrame(rows)


def test_pc_row_decides_on_the_upper_widths():
    assert "| **yes**: 1 − cos levels off from width 512 at every depth" in pc_distance_row(_pc(0.0))
    row = pc_distance_row(_pc(-0.4))
    assert "| **no**: 1 − cos still falls" in row and "−0.40 [−0.40, −0.40] over 512–2048 (falls)" in row
    mixed = pd.concat([_pc(0.0).query("depth == 3"), _pc(-0.4).query("depth == 5")])
    assert "| **partly**: L = 3, c = 1 levels off, L = 5, c = 1 falls" in pc_distance_row(mixed)


def test_the_block_says_when_nothing_is_committed(tmp_path):
    assert "no fixed-width measurement of issue 30 is committed yet" in fixed_width_block(tmp_path)
