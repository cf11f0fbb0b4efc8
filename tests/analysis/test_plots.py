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


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for lg in fig.legends for t in lg.get_texts()]


def test_lr_star_has_reference_slopes_edge_rings_and_a_seed_band(pc_study, mixed_study, figures, tmp_path):
    """One legend for the figure (guides, band, every group by its full name); η* left, η_max on its own
    panels right; a band over seeds only where there are seeds."""
    result, _ = pc_study
    plots.plot_lr_star_vs_width(result, tmp_path / "a.png")
    plots.plot_lr_star_vs_width(mixed_study, tmp_path / "b.png")
    seeds2, seed1 = figures
    for fig in (seeds2, seed1):
        assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
        labels = _legend_texts(fig)
        assert "k = 0" in labels and "k = −1" in labels
        axes = np.array(fig.axes).reshape(-1, 2)
        assert all(ax.get_title().endswith("η* ∝ width^k") for ax in axes[:, 0])
        assert all(ax.get_title().endswith("η_max") for ax in axes[:, 1])
    assert all(ax.collections for ax in np.array(seeds2.axes).reshape(-1, 2)[:, 0]), "no band over seeds"
    assert any(t.startswith("band: 95% t interval") for t in _legend_texts(seeds2))
    assert not any(ax.collections for ax in seed1.axes)  # one seed: no band
    labels = _legend_texts(seed1)
    assert {t.split(":")[0] for t in labels if ":" in t} >= {"BP SP", "BP μP", "PC SP T=20", "PC μP T=20"}
    assert any("1 seed" in t for t in labels) and not any("[+0.00, +0.00]" in t for t in labels)
    edge = any(result.per_width.edge_limited) or any(mixed_study.per_width.edge_limited)
    assert edge == any("edge-limited" in t for f in figures for t in _legend_texts(f))


def _texts(fig) -> list:
    """Every visible text of a drawn figure: titles, labels, tick labels, legend entries."""
    return [t for t in fig.findobj(plots.matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("kind", ["loss", "lr_star", "curves"])
def test_figures_are_one_column_wide_with_7pt_text(mixed_study, figures, tmp_path, kind):
    """Two columns of panels (SP, μP) or η* beside η_max: the figure is 3.3 in wide and no text is
    under 7 pt at that size; labels name what is drawn."""
    history = planted_trials(0.0, widths=(64, 128, 256), log2_lrs=range(-7, 1), seeds=(0,))[1]
    if kind == "loss":
        plots.plot_loss_vs_lr(mixed_study, tmp_path / "f.png")
    elif kind == "lr_star":
        plots.plot_lr_star_vs_width(mixed_study, tmp_path / "f.png")
    else:
        plots.plot_learning_curves(mixed_study, history, tmp_path / "f.png")
    (fig,) = figures
    assert fig.get_size_inches()[0] == pytest.approx(plots.COLUMN_IN)
    sizes = {t.get_text(): t.get_fontsize() for t in _texts(fig)}
    assert sizes and min(sizes.values()) >= plots.MIN_PT, sorted(sizes.items(), key=lambda x: x[1])[:5]
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    if kind == "loss":
        assert fig.get_supylabel() == "final train loss (mean over seeds)"
    if kind == "curves":
        titles = [ax.get_title() for ax in _visible_axes(fig)]
        assert all("η=" in t and "nearest base η*" in t for t in titles), titles


def test_wide_facets_get_the_double_column_width(pc_study, figures, tmp_path):
    result, _ = pc_study
    plots.plot_loss_vs_lr(result, tmp_path / "f.png")
    (fig,) = figures
    assert fig.get_size_inches()[0] == pytest.approx(plots.DOUBLE_IN)  # four columns of panels
    assert min(t.get_fontsize() for t in _texts(fig)) >= plots.MIN_PT


def test_learning_curves_use_the_grid_lr_nearest_base_lr_star(mixed_study):
    """The curves' η is a rate measured at every width, the nearest to the base η* in log2."""
    t = mixed_study.table
    g = t[(t.algorithm == "bp") & (t.parametrization == "mup")]
    base = float(mixed_study.groups.set_index(["algorithm", "parametrization"]).lr_star_base[("bp", "mup")])
    eta = plots.nearest_grid_lr(g, base)
    rates = sorted(set(g.lr))
    assert eta in rates and all(abs(np.log2(eta / base)) <= abs(np.log2(r / base)) + 1e-9 for r in rates)
    uneven = pd.concat([g, g[g.width == 64].assign(lr=base, log2_lr=np.log2(base))])  # base η* at one width only
    assert plots.nearest_grid_lr(uneven, base) == eta


def test_png_at_the_dpi_and_a_vector_copy_that_is_byte_stable(mixed_study, tmp_path):
    from PIL import Image

    p = plots.plot_lr_star_vs_width(mixed_study, tmp_path / "a" / "f.png", dpi=80, formats=("png", "svg", "pdf"))
    assert p.with_suffix(".svg").is_file() and p.with_suffix(".pdf").is_file()
    assert Image.open(p).info["dpi"][0] == pytest.approx(80, abs=1)
    again = plots.plot_lr_star_vs_width(mixed_study, tmp_path / "b" / "f.png", dpi=80, formats=("png", "svg"))
    assert p.with_suffix(".svg").read_bytes() == again.with_suffix(".svg").read_bytes()
