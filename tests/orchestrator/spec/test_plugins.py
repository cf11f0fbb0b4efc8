"""A learning rule and a dataset from a module outside the package, registered the documented way
(docs/EXTENDING.md), run through `coord-check` and a two-width sweep on the embedded Ray (workers included), then `analyze`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.errors import BadInput
from orchestrator.spec.config import load_sweep
from trainers import DATASET_REGISTRY

# Feedback alignment (Lillicrap et al. 2016): the output error travels down through fixed random
# matrices B_l, drawn like W_l at initialisation (so μP's scales hold), instead of W_lᵀ.
PLUGIN = '''
"""Feedback alignment and a toy dataset, registered from outside mutransfer."""

import torch

from trainers import Dataset, Trainer, init_net, make_model, register_dataset, register_table, register_trainer
from trainers._bp import BP_TABLES


@register_trainer("fa")
class FATrainer(Trainer):
    """Feedback alignment: δ_{l-1} = α_l (δ_l B_l) ⊙ φ'(h_{l-1}), with B_l fixed and random."""

    def __init__(self, cfg, input_dim, output_dim):
        super().__init__(cfg, input_dim, output_dim)
        shadow = make_model(cfg.model, input_dim, output_dim, cfg.width, cfg.depth, cfg.activation, False)
        init_net(shadow, self.table, cfg.width_mult, cfg.seed + 7919)  # B_l: W_l's distribution, another draw
        self.feedback = [layer.weight.detach().to(self.device, self.dtype) for layer in shadow.layers]

    @torch.no_grad()
    def _gradient(self, x, target):
        net = self.model
        hs, pairs = net.forward_pairs(x, lambda h: (net.phi(h), net.dphi(h)))
        inputs = [net.shape_input(x)] + [p[0] for p in pairs]
        e = self.loss_grad(hs[-1], target)  # ∂loss/∂h_L
        grads = {}
        for l in reversed(range(net.depth)):
            layer, alpha = net.layers[l], net.multipliers[l]
            grads[f"layers.{l}.weight"] = layer.weight_grad(e, inputs[l], alpha)
            if layer.bias is not None:
                grads[f"layers.{l}.bias"] = layer.bias_grad(e, alpha)
            if l > 0:
                e = layer.transpose(e, self.feedback[l], inputs[l].shape).mul_(alpha) * pairs[l - 1][1]
        return grads, {"loss": self.loss_fn(hs[-1], target)}


for key, table in BP_TABLES.items():  # BP's SP and μP tables, keyed (parametrization, optimizer)
    register_table("fa", key, table)


def load_toy(subset, test_subset, device, dtype, seed):
    """16 Gaussian inputs, 4 classes: the argmax of a fixed random linear teacher."""
    gen = torch.Generator().manual_seed(1234)
    teacher = torch.randn(4, 16, generator=gen)
    n_train, n_test = subset or 256, test_subset or 128
    x = torch.randn(n_train + n_test, 16, generator=gen)
    y = (x @ teacher.T).argmax(1)
    return Dataset("toy", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 4).to(device, dtype)


register_dataset("toy", load_toy, from_files=False)
'''

SWEEP = """
name: fa_toy
plugins: [{module}]
trainer: {{depth: 3, activation: tanh, base_width: 16, parametrization: mup}}
data: {{dataset: toy, subset: 256, test_subset: 128}}
train: {{epochs: 1, batch_size: 32}}
grid:
  algorithm: [fa]
  width: [16, 64]
  lr: [0.125, 0.5]
resources: {{cpu: 1}}
"""


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """A directory outside the package holding the plugin module ``fa_plugin``."""
    where = tmp_path / "plugins"
    where.mkdir()
    (where / "fa_plugin.py").write_text(PLUGIN)
    return where


def _env(base: dict, plugin_dir: Path, **extra: str) -> dict:
    path = os.pathsep.join(p for p in (str(plugin_dir), base.get("PYTHONPATH", "")) if p)
    return dict(base, PYTHONPATH=path, **extra)


def test_a_bad_plugin_is_one_line_naming_the_key_and_module(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(SWEEP.format(module="no_such_plugin_module"))
    with pytest.raises(BadInput, match=r"s\.yaml: plugins: cannot import 'no_such_plugin_module'") as exc:
        load_sweep(sweep)
    assert "\n" not in str(exc.value)


def test_without_the_plugin_fa_is_rejected(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(SWEEP.replace("plugins: [{module}]\n", "").format())
    with pytest.raises(BadInput, match="algorithm='fa' is not one of bp, pc, tp"):
        load_sweep(sweep)


def test_coord_check_runs_a_plugin_rule_named_in_the_environment(tmp_path, plugin_dir, run_cli):
    env = _env(dict(os.environ), plugin_dir, MUTRANSFER_PLUGINS="fa_plugin")
    out = tmp_path / "cc"
    proc = run_cli(
        [
            "coord-check",
            "--algorithm",
            "fa",
            "--parametrization",
            "sp",
            "--widths",
            "64,128,256",
            "--steps",
            "2",
            "--out",
            str(out),
        ],
        env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "coord check fa_sp_sgd" in proc.stdout
    assert "PASS: SP output slope" in proc.stdout
    slopes = pd.read_parquet(out / "slopes.parquet")
    assert slopes[slopes.layer == "layers.2"].slope.min() > 0.5  # SP's output grows with width under FA too


def test_an_unimportable_plugin_in_the_environment_is_exit_2(plugin_dir, run_cli):
    env = _env(dict(os.environ), plugin_dir, MUTRANSFER_PLUGINS="fa_plugin, no_such_plugin_module")
    proc = run_cli(["coord-check", "--algorithm", "fa", "--widths", "64,128"], env, timeout=120)
    assert proc.returncode == 2
    assert "MUTRANSFER_PLUGINS: cannot import 'no_such_plugin_module'" in proc.stderr


def test_an_installed_package_registers_through_its_entry_point(tmp_path, plugin_dir, monkeypatch):
    """A package's ``[project.entry-points."mutransfer.plugins"]`` is imported without being named."""
    from orchestrator.spec.plugins import entry_point_plugins, import_installed_and_env
    from trainers import DATASETS, TRAINERS

    dist = plugin_dir / "fa_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fa-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mutransfer.plugins]\nfa = fa_plugin\n")
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.delenv("MUTRANSFER_PLUGINS", raising=False)
    assert entry_point_plugins() == ["fa_plugin"]
    try:
        assert import_installed_and_env() == ["fa_plugin"]
        assert "fa" in TRAINERS and "toy" in DATASETS
    finally:  # leave the registries as the other tests expect them
        TRAINERS.pop("fa", None)
        DATASET_REGISTRY.pop("toy", None)
        sys.modules.pop("fa_plugin", None)


@pytest.mark.slow
def test_two_width_sweep_of_a_plugin_rule_on_a_plugin_dataset_runs_in_ray_workers(
    tmp_path, plugin_dir, ray_env, run_cli
):
    sweep = tmp_path / "fa_toy.yaml"
    sweep.write_text(SWEEP.format(module="fa_plugin"))
    env = _env(ray_env, plugin_dir)
    env.pop("MUTRANSFER_PLUGINS", None)  # the sweep file's plugins: alone must reach the workers
    results = tmp_path / "results"
    proc = run_cli(["sweep", str(sweep), "--results", str(results)], env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = pd.read_parquet(results / "fa_toy" / "trials.parquet")
    assert len(trials) == 4
    assert set(trials.algorithm) == {"fa"} and set(trials.dataset) == {"toy"}
    assert set(trials.width) == {16, 64}
    assert set(trials.status) <= {"ok", "diverged"}, trials[["status", "error"]].to_string()
    assert (trials.status == "ok").any()
    report = run_cli(["analyze", str(results / "fa_toy")], env, timeout=300)  # the analysis reads it as any sweep
    assert report.returncode == 0, report.stdout + report.stderr
    summary = pd.read_parquet(results / "fa_toy" / "report" / "summary.parquet")
    assert set(summary.algorithm) == {"fa"}
