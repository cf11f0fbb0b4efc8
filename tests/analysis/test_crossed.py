"""analysis.crossed: issue 30's crossed table (loss × length × group) and its k-against-length figure."""

import numpy as np
import pandas as pd

from analysis.crossed import crossed, crossed_markdown, main
from analysis.io import write_parquet_atomic
from analysis.planted import planted_trials


def _study(root, name: str, loss: str, k_mup: float) -> str:
    """A results directory of planted BP trials (SP drifts with k = -1, μP with ``k_mup``), 50 steps per epoch."""
    parts = [
        planted_trials(k, name=name, parametrization=p, epochs=6, steps_per_epoch=50, rng_seed=i)
        for i, (p, k) in enumerate([("sp", -1.0), ("mup", k_mup)])
    ]
    trials, history = (pd.concat(x, ignore_index=True) for x in zip(*parts))
    d = root / name
    d.mkdir(parents=True)
    write_parquet_atomic(trials, d / "trials.parquet")
    write_parquet_atomic(history, d / "history.parquet")
    (d / "sweep.yaml").write_text(
        f"name: {name}\ntrainer: {{loss: {loss}}}\nobjective: {{metric: final_train_loss, mode: min}}\n"
        "verify: {max_drift: 0.2, max_regret: 0.05}\n"
    )
    return str(d)


def test_the_table_stacks_studies_by_loss_and_length(tmp_path):
    dirs = [_study(tmp_path, "a_mse", "mse", -0.5), _study(tmp_path, "a_ce", "ce", 0.0)]
    table, over = crossed(dirs, (100, 300, 5000))
    assert set(zip(table.loss, table.study)) == {("mse", "a_mse"), ("ce", "a_ce")}
    assert sorted(set(table.sgd_steps)) == [100.0, 300.0]  # 5000 was not recorded
    assert len(table) == 2 * 2 * 2 and table.attrs["keys"][0] == "loss"
    mup = table[table.parametrization == "mup"].set_index(["loss", "target_steps"]).drift_exponent
    np.testing.assert_allclose(mup.loc["mse"], -0.5, atol=0.1)
    np.testing.assert_allclose(mup.loc["ce"], 0.0, atol=0.1)
    assert set(over.epoch) == set(range(1, 7)) and set(over.loss) == {"mse", "ce"}
    text = crossed_markdown(table)
    assert text.count("\n") == 2 + len(table) and "| ce | 100 | bp | mup |" in text
    assert "inference_steps" not in text  # PC's keys are not shown for BP


def test_main_writes_table_markdown_and_figure(tmp_path, capsys):
    dirs = [_study(tmp_path, "b_mse", "mse", 0.0)]
    out = tmp_path / "out"
    assert main([*dirs, "--steps", "100,300", "--out", str(out)]) == 0
    assert len(pd.read_parquet(out / "crossed.parquet")) == 4
    assert (out / "crossed.md").read_text().startswith("| loss | SGD steps |")
    assert (out / "k_against_length.png").stat().st_size > 10_000
    assert main([str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "analysis.crossed" in capsys.readouterr().err
