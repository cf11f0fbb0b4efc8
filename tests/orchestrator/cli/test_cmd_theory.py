"""`mutransfer pc-geometry` and `mutransfer alignment`: files, tables, agreement with direct computations, bad input."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from orchestrator.cli.main import main


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # the commands set one thread


def test_pc_geometry_writes_parquet_png_and_table(tmp_path, capsys):
    out = tmp_path / "geo"
    code = main(
        [
            "pc-geometry",
            "--widths",
            "64,256",
            "--steps",
            "1,inf",
            "--network",
            "linear",
            "--batch-size",
            "8",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    t = pd.read_parquet(out / "pc_geometry.parquet")
    assert (out / "pc_geometry.png").stat().st_size > 10_000
    assert set(t.steps) == {"1", "inf"} and set(t.width) == {64, 256} and set(t.gamma_bar_L) == {0.0, -1.0}
    assert ((t.cos_bp.abs() <= 1 + 1e-12) & (t.cos_gn.abs() <= 1 + 1e-12)).all()
    # ‖C‖ falls like 1/m at γ̄_L = 0 only; converged PC moves towards the gradient there
    c = t[(t.steps == "inf") & (t.layer == "all")].set_index(["gamma_bar_L", "width"])
    assert c.coupling_norm[0.0, 256] < c.coupling_norm[0.0, 64] / 3
    assert c.coupling_norm[-1.0, 256] > c.coupling_norm[-1.0, 64] / 2
    assert 1 - c.cos_bp[0.0, 256] < (1 - c.cos_bp[0.0, 64]) / 2
    text = capsys.readouterr().out
    assert "cos_bp@256" in text and "converged" in text and "Gauss-Newton" in text


def test_pc_geometry_many_steps_reach_the_closed_form(tmp_path):
    """2000 gradient steps of inference in the linear network give the closed-form equilibrium's cosines."""
    out = tmp_path / "geo"
    assert (
        main(
            [
                "pc-geometry",
                "--widths",
                "64",
                "--steps",
                "2000,inf",
                "--network",
                "linear",
                "--gamma-bar-L",
                "0",
                "--batch-size",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    t = pd.read_parquet(out / "pc_geometry.parquet")
    num = t[t.steps == "2000"].set_index("layer").sort_index()
    closed = t[t.steps == "inf"].set_index("layer").sort_index()
    assert np.allclose(num.cos_bp, closed.cos_bp, atol=1e-6) and np.allclose(num.cos_gn, closed.cos_gn, atol=1e-6)
    assert (closed.cos_bp < 0.999).any()  # not trivially equal to the gradient at width 64


def test_pc_geometry_tanh_converged_gap_is_small(tmp_path):
    out = tmp_path / "geo"
    assert (
        main(
            [
                "pc-geometry",
                "--widths",
                "64,128",
                "--steps",
                "inf",
                "--network",
                "tanh",
                "--gamma-bar-L",
                "0",
                "--batch-size",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    t = pd.read_parquet(out / "pc_geometry.parquet")
    assert set(t.network) == {"tanh"} and t.coupling_norm.isna().all()
    assert t.conv_gap.max() < 1e-4  # 600 vs 300 inference steps: converged


@pytest.mark.parametrize(
    "argv, word",
    [
        (["--network", "relu"], "--network='relu'"),
        (["--steps", "0,5"], "--steps"),
        (["--gamma-bar-L", "0.5"], "--gamma-bar-L=0.5"),
        (["--widths", "64,x"], "--widths"),
        (["--parametrization", "ntk"], "--parametrization='ntk'"),
        (["--gamma-L-c", "1,-2"], "c must be positive"),
        (["--gamma-L-c", "1", "--batch-sizes", "0"], "--batch-sizes"),
        (["--gamma-L-c", "1", "--network", "both"], "--gamma-L-c takes tanh or linear"),
    ],
)
def test_pc_geometry_bad_input(tmp_path, capsys, argv, word):
    out = tmp_path / "geo"
    assert main(["pc-geometry", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert word in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_pc_geometry_after_training_sweeps_c(tmp_path, capsys):
    out = tmp_path / "interp"
    assert (
        main(
            [
                "pc-geometry",
                "--gamma-L-c",
                "0.01,1e4",
                "--widths",
                "64",
                "--batch-sizes",
                "8",
                "--seeds",
                "0",
                "--train-steps",
                "20",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    t = pd.read_parquet(out / "pc_interpolation.parquet").set_index("c")
    assert (out / "pc_interpolation.png").stat().st_size > 10_000
    assert list(t.index) == [0.01, 1e4] and (t.relax_residual < 1e-6).all()
    assert t.cos_bp[0.01] > 0.999 and t.cos_gn[1e4] > t.cos_bp[1e4]
    text = capsys.readouterr().out
    assert "γ_L = c·m" in text and "cos_gn_relaxed" in text


def test_alignment_writes_fits_that_match_the_table(tmp_path, capsys):
    out = tmp_path / "al"
    assert main(["alignment", "--widths", "64,128,256", "--seeds", "0,1", "--steps", "2", "--out", str(out)]) == 0
    table = pd.read_parquet(out / "alignment.parquet")
    fits = pd.read_parquet(out / "alignment_fits.parquet")
    omega = pd.read_parquet(out / "alignment_omega.parquet").set_index(["algorithm", "parametrization", "layer"])
    assert (out / "alignment.png").stat().st_size > 10_000
    assert set(zip(fits.algorithm, fits.parametrization)) == {
        ("bp", "sp"),
        ("bp", "mup"),
        ("bp", "ntk"),
        ("pc", "mup"),
        ("tp", "sp"),
        ("tp", "mup"),
    }
    for f in fits.itertuples():
        g = table[(table.algorithm == f.algorithm) & (table.parametrization == f.parametrization)]
        g = g.groupby("width").ratio.mean()
        slope = np.polyfit(np.log2(g.index), np.log2(g.values), 1)[0]
        assert f.omega == pytest.approx(slope, rel=1e-9)
    assert (omega.fits == 4).all() and (omega.omega_lo <= omega.omega).all() and (omega.omega <= omega.omega_hi).all()
    om = fits.set_index(["algorithm", "parametrization"]).omega
    assert om["tp", "mup"] < om["bp", "mup"] - 0.2  # CLT vs LLN, already at widths 64..256
    # the kernel-regime control: same ω_L as μP, but its last hidden features freeze like n^-1/2
    assert abs(omega.omega["bp", "ntk", "layers.2"] - omega.omega["bp", "mup", "layers.2"]) < 0.05
    assert omega.dphi_slope_hi["bp", "ntk", "layers.2"] < -0.35 < -0.15 < omega.dphi_slope_lo["bp", "mup", "layers.2"]
    text = capsys.readouterr().out
    assert "bp ntk: kernel (features freeze)" in text and "bp mup: feature learning" in text


@pytest.mark.parametrize(
    "argv, word", [(["--widths", "64"], "at least two"), (["--lr", "-1"], "--lr"), (["--seeds", ""], "--seeds")]
)
def test_alignment_bad_input(tmp_path, capsys, argv, word):
    out = tmp_path / "al"
    assert main(["alignment", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert word in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["alignment", "--out", str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err and f.read_text() == "x"


TP_NTK_FILE = Path(__file__).resolve().parents[3] / "search_spaces" / "tables" / "tp_ntk_sgd.yaml"


def test_alignment_settings_take_a_table_file(tmp_path, capsys):
    """--settings: TP under the NTK-style table file beside TP μP (issue 30's kernel-regime control)."""
    from trainers import TrainerConfig, resolve_table

    out = tmp_path / "al"
    settings = f"tp:mup,tp:{TP_NTK_FILE}"
    argv = ["alignment", "--settings", settings, "--widths", "64,128,256", "--seeds", "0", "--steps", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    omega = pd.read_parquet(out / "alignment_omega.parquet").set_index(["algorithm", "parametrization", "layer"])
    assert set(omega.index.droplevel(2)) == {("tp", "mup"), ("tp", "tp_ntk_sgd")}
    # the feedback map at the transposed output layer's scale freezes TP's features after one step; μP does not
    assert omega.dphi_slope["tp", "tp_ntk_sgd", "layers.2"] < -0.35 < -0.15 < omega.dphi_slope["tp", "mup", "layers.2"]
    assert "tp tp_ntk_sgd: kernel (features freeze)" in capsys.readouterr().out
    assert resolve_table(TrainerConfig(algorithm="tp")).name == "tp/mup/sgd"  # the registered table is back


@pytest.mark.parametrize(
    "settings, word",
    [
        ("xx:mup", "ALGORITHM:TABLE"),
        ("tp", "ALGORITHM:TABLE"),
        ("tp:nofile.yaml", "cannot read"),
        ("bp:FILE", "tp table"),
    ],
)
def test_alignment_settings_bad_input(tmp_path, capsys, settings, word):
    out = tmp_path / "al"
    assert main(["alignment", "--settings", settings.replace("FILE", str(TP_NTK_FILE)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert word in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
