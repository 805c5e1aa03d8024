"""pneumo_core.evaluation.artifacts: what a zoo folder holds."""
from __future__ import annotations

from pneumo_core.evaluation.artifacts import has_predictions, prediction_index
from pneumo_core.files import ASSETS


def test_a_folder_has_predictions_when_it_holds_a_prediction_file(tmp_path):
    assert has_predictions(ASSETS) == (not prediction_index(ASSETS).empty)
    assert not has_predictions(tmp_path)
    (tmp_path / "predictions" / "binary").mkdir(parents=True)
    assert not has_predictions(tmp_path)  # an empty task folder is not a prediction file
    (tmp_path / "predictions" / "binary" / "resnet18_seed0_val.csv").write_text("image_id,label\n")
    assert has_predictions(tmp_path)
