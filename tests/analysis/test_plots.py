"""Plot layout (analysis/plots.py): facets for extra keys, titles, legends outside the data, bands, formats."""

import numpy as np
import pandas as pd
import pytest

import analysis.plots as plots
from analysis.planted import planted_trials
from analysis.transfer import analyze

FAST = {"widths": (64, 128, 256), "log2_lrs": range(-7, 1), "seeds": (0, 1)}


def _result(groups):
    parts = [planted_trials(k, rng_seed=i, **FAST, **g) for i, (k, g) in enumerate(groups)]
    trials = pd.concat([p[0] for p in parts], ignore_index=True)
    history = pd.concat([p[1] for p in parts], ignore_index=True)
    return analyze(trials), history


@pytest.fixture(scope="module")
def pc_study():
    """PC under SP and μP, T ∈ {1, 5}, γ̄_L ∈ {−1, 0}: 8 groups."""
    return _result(
        [
            (
                -0.5 if p == "sp" else 0.0,
                {"algorithm": "pc", "parametrization": p, "inference_steps": t, "extra": {"gamma_bar_L": g}},
            )
            for p in ("sp", "mup")
            for t in (1, 5)
            for g in (-1.0, 0.0)
        ]
    )


@pytest.fixture(scope="module")
def mixed_study():
    """BP and PC (T = 20) under SP and μP, one seed."""
    groups = [
        (-0.5 if p == "sp" else 0.0, {"algorithm": a, "parametrization": p})
        for a in ("bp", "pc")
        for p in ("sp", "mup")
    ]
    parts = [
        planted_trials(k, rng_seed=i, widths=(64, 128, 256), log2_lrs=range(-7, 1), seeds=(0,), **g)
        for i, (k, g) in enumerate(groups)
    ]
    return analyze(pd.concat([p[0] for p in parts], ignore_index=True))


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, kept open and drawn (their files are still written)."""
    kept = []
    save = plots._save

    def keep(fig, path, *args, **kwargs):
        fig.canvas.draw()
        kept.append(fig)
        monkeypatch.setattr(plots.plt, "close", lambda f=None: None)
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(plots, "_save", keep)
    return kept


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def legend_overlaps(fig) -> list[str]:
    """Data points (markers and line vertices, in display coordinates) that lie inside a legend's box."""
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    boxes = [lg.get_window_extent(renderer) for lg in legends]
    hits = []
    for ax in _visible_axes(fig):
        inside = ax.get_window_extent(renderer)
        for line in ax.lines:
            xy = np.asarray(line.get_xydata(), float)
            if not len(xy) or not line.get_visible():
                continue
            xy = xy[np.isfinite(xy).all(axis=1)]
            disp = ax.transData.transform(xy)
            if line.get_clip_on():  # clipped points are not drawn
                disp = disp[[inside.contains(x, y) for x, y in disp]]
            for box in boxes:
                hits += [f"{ax.get_title()}: {line.get_label()} at {p}" for p in disp if box.contains(*p)]
    return hits


def test_facets_put_the_first_extra_key_across_and_the_others_down(pc_study, figures, tmp_path):
    result, _ = pc_study
    cells, nrows, ncols, row_keys = plots._facets(result)
    assert (nrows, ncols) == (2, 4) and len(cells) == 8  # columns: SP T=1, SP T=5, μP T=1, μP T=5; rows: γ̄_L
    plots.plot_loss_vs_lr(result, tmp_path / "loss.png")
    (fig,) = figures
    axes = np.array(fig.axes).reshape(nrows, ncols)
    assert len(_visible_axes(fig)) == 8
    titles = [[ax.get_title() for ax in row] for row in axes]
    for j, want in enumerate(["SP  T=1", "SP  T=5", "μP  T=1", "μP  T=5"]):  # short titles: one line
        assert all(want in titles[i][j] for i in range(nrows)), titles
    for i, want in enumerate(["γ̄_L=-1.0", "γ̄_L=0.0"]):
        assert all(want in t for t in titles[i]), titles


@pytest.mark.parametrize("kind", ["loss", "lr_star", "curves"])
def test_no_legend_covers_data(pc_study, figures, tmp_path, kind):
    result, history = pc_study
    if kind == "loss":
        plots.plot_loss_vs_lr(result, tmp_path / "f.png")
    elif kind == "lr_star":
        plots.plot_lr_star_vs_width(result, tmp_path / "f.png")
    else:
        plots.plot_learning_curves(result, history, tmp_path / "f.png")
    (fig,) = figures
    assert fig.legends or any(ax.get_legend() for ax in fig.axes)
    assert legend_overlaps(fig) == []


def test_the_overlap_check_can_fail():
    fig, ax = plots.plt.subplots()
    ax.plot(np.linspace(0, 10, 200), np.full(200, 5.0), "o", label="data")  # through the middle
    ax.legend(loc="center")
    fig.canvas.draw()
    assert legend_overlaps(fig)
    plots.plt.close(fig)


def test_titles_carry_only_the_keys_a_group_has(mixed_study, figures, tmp_path):
    plots.plot_loss_vs_lr(mixed_study, tmp_path / "f.png")
    (fig,) = figures
    titles = {ax.get_title() for ax in _visible_axes(fig)}
    assert {"BP SP", "BP μP", "PC SP  T=20", "PC μP  T=20"} == titles


def test_lr_star_has_reference_slopes_edge_rings_and_a_seed_band(pc_study, mixed_study, figures, tmp_path):
    result, _ = pc_study
    plots.plot_lr_star_vs_width(result, tmp_path / "a.png")
    plots.plot_lr_star_vs_width(mixed_study, tmp_path / "b.png")
    seeds2, seed1 = figures
    for ax in _visible_axes(seeds2):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "k = 0" in labels and "k = −1" in labels
        assert ax.collections, "no band over seeds"  # fill_between of the t interval over seeds
    for ax in _visible_axes(seed1):
        assert not ax.collections  # one seed: no band
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any("1 seed" in t for t in labels) and not any("[+0.00, +0.00]" in t for t in labels)


def test_png_at_the_dpi_and_a_vector_copy_that_is_byte_stable(mixed_study, tmp_path):
    from PIL import Image

    p = plots.plot_lr_star_vs_width(mixed_study, tmp_path / "a" / "f.png", dpi=80, formats=("png", "svg", "pdf"))
    assert p.with_suffix(".svg").is_file() and p.with_suffix(".pdf").is_file()
    assert Image.open(p).info["dpi"][0] == pytest.approx(80, abs=1)
    again = plots.plot_lr_star_vs_width(mixed_study, tmp_path / "b" / "f.png", dpi=80, formats=("png", "svg"))
    assert p.with_suffix(".svg").read_bytes() == again.with_suffix(".svg").read_bytes()
