"""The coordinate-check figure: SP beside μP per algorithm, one panel per step, legend off the data."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import plot_coord_grid  # noqa: E402

WIDTHS = (64, 128, 256, 512)


def _planted(algorithms=("bp", "pc", "tp"), steps=(1, 2, 3)):
    """Power laws: μP flat, SP's output ∝ width^0.8; one layer of TP μP at step 1 does not move."""
    rows, slopes = [], []
    for alg in algorithms:
        for par in ("sp", "mup"):
            for t in steps:
                for l in range(3):
                    k = 0.8 if (par == "sp" and l == 2) else 0.0
                    still = alg == "tp" and par == "mup" and l == 0 and t == 1
                    rows += [
                        {
                            "algorithm": alg,
                            "parametrization": par,
                            "width": w,
                            "seed": 0,
                            "layer": f"layers.{l}",
                            "step": t,
                            "delta_rms": 0.0 if still else 0.1 * t * (w / 64) ** k,
                            "rms": 1.0,
                        }
                        for w in WIDTHS
                    ]
                    slopes.append(
                        {
                            "algorithm": alg,
                            "parametrization": par,
                            "layer": f"layers.{l}",
                            "step": t,
                            "slope": float("nan") if still else k,
                            "moved": not still,
                        }
                    )
    return pd.DataFrame(rows), pd.DataFrame(slopes)


def test_grid_has_a_panel_per_algorithm_parametrization_and_step(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig: figs.append(fig))  # keep the figure to inspect it
    table, slopes = _planted(("bp", "tp"), (1, 2))
    paths = plot_coord_grid(table, slopes, tmp_path / "cc.png", title="planted")
    assert [p.name for p in paths] == ["cc.png", "cc.svg"] and all(p.stat().st_size > 10_000 for p in paths)
    fig = figs[0]
    axes = [ax for ax in fig.axes if ax.has_data()]
    assert len(axes) == 2 * 2 * 2
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("BP SP, step 1") and titles[2].startswith("BP μP, step 1")
    assert "+0.80" in titles[0].splitlines()[1] and "still" in titles[6]  # TP μP step 1, layers.0
    for ax in axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert len(ax.get_lines()) == 3
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    for ax in axes:
        assert not legend.overlaps(ax.get_window_extent(renderer)), ax.get_title()
