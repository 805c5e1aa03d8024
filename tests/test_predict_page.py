"""The Predict page through AppTest: its own URL, a bad model skipped, uploads capped."""
from __future__ import annotations

import pytest
from PIL import Image

from tests.app_utils import png_bytes, run_app
from tests.checkpoint_utils import tiny_checkpoint


def test_predict_has_its_own_url_and_the_root_goes_there():
    at = run_app(timeout=300)
    assert not at.exception and [t.value for t in at.title] == ["Predict"]
    pages = getattr(at, "_registered_pages", None)
    if pages is None:
        pytest.skip("this Streamlit's AppTest does not expose the registered pages")
    urls = {info.get("url_pathname"): str(info.get("script_path", "")) for info in pages.values()}
    assert urls.get("predict", "").endswith("pages/predict.py")  # /predict resolves, no "Page not found"


def test_predict_page_skips_a_bad_model_and_caps_uploads(tmp_path):
    from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

    tiny_checkpoint(tmp_path / "checkpoints/binary/custom_cnn.pt")
    (tmp_path / "checkpoints/binary/resnet18.pt").write_bytes(b"garbage" * 100)
    at = run_app(timeout=300, source_kind="Local checkpoints folder", local_dir=str(tmp_path))
    assert not at.exception, [e.message for e in at.exception]
    good = UploadedFile(UploadedFileRec(file_id="0", name='=HYPERLINK("x").png', type="image/png",
                                        data=png_bytes(Image.new("L", (64, 64), 90))), None)
    bad = [UploadedFile(UploadedFileRec(file_id=str(i), name=f"=cmd{i}.png", type="image/png", data=b"not a picture"),
                        None) for i in range(1, 13)]
    at.session_state["uploads"] = [good] + bad  # 13 files: the first 12 are read
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("binary/resnet18 skipped" in e.value for e in at.error)
    assert any("13 files uploaded" in w.value and "the first 12" in w.value for w in at.warning)
    assert sum("not an image" in e.value for e in at.error) == 11
