"""analysis.feature_plots: the TP NTK-control and PC-distance figures of issue 30, from their Parquet tables."""

import numpy as np
import pandas as pd
import pytest

from analysis.feature_plots import feature_slopes, main, plot_pc_distance


def _profile() -> pd.DataFrame:
    """alignment_profile-shaped rows: 'ntk' features freeze like width^-1/2, 'mup' stay; layers.1 is noise."""
    rows = []
    for par, k in (("mup", 0.0), ("ntk", -0.5)):
        for w in (64, 128, 256):
            for seed in (0, 1):
                for step in (1, 2, 3):
                    for layer, v in (("layers.1", 1.0 + seed), ("layers.2", 0.1 * step * (w / 64) ** k)):
                        rows.append(
                            {"algorithm": "tp", "parametrization": par, "width": w, "seed": seed, "step": step}
                            | {"layer": layer, "rms_dphi": v * (1 + 0.01 * seed)}
                        )
    return pd.DataFrame(rows)


def test_feature_slopes_read_the_last_hidden_layer():
    s = feature_slopes(_profile()).set_index(["parametrization", "step"]).dphi_slope
    assert len(s) == 6
    np.testing.assert_allclose(s.loc["ntk"], -0.5, atol=1e-9)
    np.testing.assert_allclose(s.loc["mup"], 0.0, atol=1e-9)


def test_main_draws_both_figures_and_refuses_a_wrong_table(tmp_path, capsys):
    prof = tmp_path / "profile.parquet"
    _profile().to_parquet(prof)
    assert main(["feature-change", str(prof), "--steps", "1,3", "--out", str(tmp_path / "fc.png")]) == 0
    assert (tmp_path / "fc.png").stat().st_size > 10_000 and (tmp_path / "fc.svg").exists()
    assert "-0.5" in capsys.readouterr().out
    pc = pd.DataFrame(
        {"depth": 3, "c": 1.0, "width": [64, 128, 256, 512], "seed": 0, "one_minus_cos": [0.08, 0.06, 0.05, 0.05]}
    )
    assert plot_pc_distance(pc, tmp_path / "pcd.png").stat().st_size > 10_000
    assert main(["pc-distance", str(prof), "--out", str(tmp_path / "x.png")]) == 2  # not a PC table
    assert "needs columns" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["nonsense", str(prof), "--out", "x.png"])
