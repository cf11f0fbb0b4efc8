"""docs/CALIBRATION.md is what `python -m analysis.calibration_report` writes from its committed parquet,
and the parquet's numbers come back when a design is measured again."""

from pathlib import Path

import pandas as pd
import pytest

from analysis.calibration_report import BEGIN, DESIGNS, END, markdown_table, measure

DOCS = Path(__file__).resolve().parents[2] / "docs"
TABLE = DOCS / "calibration" / "coverage.parquet"


def test_the_document_quotes_the_committed_measurements():
    table = pd.read_parquet(TABLE)
    text = (DOCS / "CALIBRATION.md").read_text()
    assert text.split(BEGIN, 1)[1].split(END, 1)[0].strip() == markdown_table(table).strip()
    assert (DOCS / "calibration" / "coverage.png").stat().st_size > 10_000
    assert set(table.design) == {d[0] for d in DESIGNS}


@pytest.mark.parametrize("design", [8], ids=["no drift, 3 seeds"])
def test_a_design_measured_again_gives_the_committed_row(design):
    table = pd.read_parquet(TABLE)
    assert DESIGNS[design][0] == "no drift" and DESIGNS[design][2] == 3
    again = measure(int(table.replicates.iloc[0]), only=[design], old=False)
    committed = table[(table.design == "no drift") & (table.seeds == "3")]
    cols = ["k_coverage", "regret_coverage", "transfers", "drifts", "inconclusive", "mean_width"]
    pd.testing.assert_frame_equal(again[cols].reset_index(drop=True), committed[cols].reset_index(drop=True))
