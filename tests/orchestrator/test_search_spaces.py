"""Every file in search_spaces/ loads, validates and expands to the study it says it is."""

from pathlib import Path

import pytest

from orchestrator.spec.config import load_sweep

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


@pytest.mark.parametrize(
    "name, algorithm, trials",
    [
        ("bp_mlp_fmnist", "bp", 390),
        ("pc_mlp_fmnist", "pc", 390),
        ("tp_mlp_fmnist", "tp", 390),
        ("pc_inference_steps", "pc", 880),
        ("smoke", "bp", 16),
    ],
)
def test_study_expands(name, algorithm, trials):
    sweep = load_sweep(SPACES / f"{name}.yaml")
    assert sweep.name == name and len(sweep.trials) == trials
    cfgs = [t.trainer for t in sweep.trials]
    assert {c["algorithm"] for c in cfgs} == {algorithm}
    assert {c["depth"] for c in cfgs} == {3} and {c["activation"] for c in cfgs} == {"tanh"}
    assert {c["dataset"] if "dataset" in c else sweep.config.data.dataset for c in cfgs} == {"fmnist"}
    for c in cfgs:  # learning rates are powers of two
        assert float(c["lr"]).hex().startswith("0x1.0000000000000p")
    if name != "smoke":
        assert {c["parametrization"] for c in cfgs} >= {"mup"}
        assert max(c["width"] for c in cfgs) == 1024 and min(c["width"] for c in cfgs) == 64
    if name == "pc_inference_steps":
        assert sorted({c["inference_steps"] for c in cfgs}) == [1, 5, 20, 50, 100]


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_file_loads(path):
    assert load_sweep(path).trials


@pytest.mark.parametrize(
    "name, widths, trials, steps",
    [
        ("paper_cnn_cpu", [16, 32, 64, 128], 288, 5),
        ("paper_cnn", [16, 32, 64, 128, 256, 512, 1024, 2048, 4096], 2754, 20),
    ],
)
def test_cnn_studies_expand(name, widths, trials, steps):
    sweep = load_sweep(SPACES / f"{name}.yaml")
    assert sweep.name == name and len(sweep.trials) == trials
    cfgs = [t.trainer for t in sweep.trials]
    assert {c["model"] for c in cfgs} == {"cnn"}
    assert {(c["algorithm"], c["parametrization"]) for c in cfgs} == {
        (a, p) for a in ("bp", "pc", "tp") for p in ("sp", "mup")
    }
    assert sorted({c["width"] for c in cfgs}) == widths
    assert {c["inference_steps"] for c in cfgs} == {steps}
