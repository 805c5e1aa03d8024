"""The Compare page through AppTest: a bad model skipped, the rest shown."""
from __future__ import annotations

from tests.app_utils import run_app
from tests.checkpoint_utils import folder_with_a_bad_model


def test_compare_skips_a_bad_model_and_shows_the_rest(tmp_path):
    folder = folder_with_a_bad_model(tmp_path)
    at = run_app(timeout=300, source_kind="Local checkpoints folder", local_dir=str(folder),
              cmp_models=["binary/custom_cnn", "three_class/custom_cnn", "binary/resnet18"])
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("binary/resnet18 skipped" in e.value for e in at.error)
    assert sum(" sees " in c.value for c in at.caption) == 2  # both good models' maps are drawn
