"""pneumo_core.evaluation.results: the committed results table as the Models page shows it, one task at a time."""
from __future__ import annotations

from pneumo_core.evaluation.results import load_results, task_table
from pneumo_core.files import ASSETS


def test_a_tasks_table_keeps_its_rows_and_drops_the_columns_empty_for_it():
    table = load_results(ASSETS)
    binary, three = task_table(table, "binary"), task_table(table, "three_class")
    assert len(binary) == (table["task"] == "binary").sum() > 0 and "task" not in binary.columns
    assert "f1_VIRUS" not in binary.columns and {"auroc", "threshold", "specificity"} <= set(binary.columns)
    assert {"macro_f1", "f1_VIRUS"} <= set(three.columns) and "threshold" not in three.columns
    assert all((binary[c] != "").any() for c in binary.columns)
