"""Dataset readers on the shared Kermany data, plus folder / CSV / RSNA layouts built from it."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pneumo_core.data.loader import ImageDataset
from pneumo_core.data.datasets import (
    content_fingerprint,
    data_fingerprint,
    dataset_summary,
    for_task,
    foreign_labels,
    kermany_label,
    kermany_patient,
    load_dataset,
    patient_split,
    read_label_csv,
    scan_folder,
    scan_kermany,
    scan_rsna,
)
from pneumo_core.errors import DatasetError
from pneumo_core.data.tasks import BACTERIA_VIRUS, BINARY, THREE_CLASS
from tests.cli_utils import cli_result
from tests.dicom_utils import write_dicom


@pytest.fixture(scope="module")
def frame(data_dir):
    return scan_kermany(data_dir)


def test_file_name_parsing():
    assert kermany_patient("person1000_bacteria_2931.jpeg") == "person1000"
    assert kermany_patient("person447_virus_921_1.jpeg") == "person447"
    assert kermany_patient("IM-0629-0001-0002.jpeg") == "IM-0629"
    assert kermany_patient("NORMAL2-IM-0337-0001.jpeg") == "NORMAL2-IM-0337"
    assert kermany_label("person1_virus_6.jpeg", "PNEUMONIA") == "VIRUS"
    assert kermany_label("person1_bacteria_1.jpeg", "PNEUMONIA") == "BACTERIA"
    assert kermany_label("IM-0001-0001.jpeg", "NORMAL") == "NORMAL"
    with pytest.raises(DatasetError, match="bacteria' or 'virus"):
        kermany_label("odd.jpeg", "PNEUMONIA")


def test_summary_reports_the_published_counts(data_dir):
    s = dataset_summary(data_dir)
    c = s["splits"]
    assert (c["train"]["NORMAL"], c["train"]["BACTERIA"], c["train"]["VIRUS"]) == (1341, 2530, 1345)
    assert (c["test"]["NORMAL"], c["test"]["BACTERIA"], c["test"]["VIRUS"]) == (234, 242, 148)
    assert (c["val"]["NORMAL"], c["val"]["BACTERIA"], c["val"]["VIRUS"]) == (7, 5, 0)
    ps = s["patient_split"]
    assert ps["patient_overlap"] == 0
    assert ps["train"]["total"] + ps["val"]["total"] == 5216
    for cls, n in (("NORMAL", 1341), ("BACTERIA", 2530), ("VIRUS", 1345)):
        assert abs(ps["val"][cls] / n - 0.12) < 0.01, cls


def test_patient_ids_are_per_split(frame):
    # person1 exists in train and test but they are different children
    assert frame["patient"].str.startswith(("train/", "test/", "val/")).all()
    tr = set(frame.loc[frame.split == "train", "patient"])
    te = set(frame.loc[frame.split == "test", "patient"])
    assert not tr & te


def test_patient_split_is_seeded_and_patient_aware(frame):
    train = frame[frame.split == "train"]
    a_tr, a_val = patient_split(train, 0.12, seed=0)
    b_tr, b_val = patient_split(train, 0.12, seed=0)
    c_tr, c_val = patient_split(train, 0.12, seed=1)
    assert list(a_val.image_id) == list(b_val.image_id)
    assert set(a_val.image_id) != set(c_val.image_id)
    assert not set(a_tr.patient) & set(a_val.patient)
    assert len(a_tr) + len(a_val) == len(train)
    # every image of a val patient is in val
    assert set(train[train.patient.isin(a_val.patient)].image_id) == set(a_val.image_id)
    _, big_val = patient_split(train, 0.3, seed=0)
    assert abs(len(big_val) / len(train) - 0.3) < 0.02


def test_tasks_map_labels(frame):
    test = frame[frame.split == "test"]
    assert for_task(test, BINARY)["target"].sum() == 242 + 148
    assert np.bincount(for_task(test, THREE_CLASS)["target"]).tolist() == [234, 242, 148]
    bv = for_task(test, BACTERIA_VIRUS)
    assert len(bv) == 390 and bv["target"].sum() == 148


def test_image_dataset_items(frame):
    ds = ImageDataset(for_task(frame[frame.split == "test"].head(3), BINARY))
    x, y, i = ds[2]
    assert x.shape == (1, 224, 224) and 0 <= x.min() and x.max() <= 1 and y in (0, 1) and i == 2


def test_fingerprint_changes_with_the_data(frame):
    t = frame[frame.split == "test"]
    assert data_fingerprint(t) == data_fingerprint(t.sample(frac=1, random_state=0))
    assert data_fingerprint(t) != data_fingerprint(t.iloc[1:])


def test_a_dicom_rewritten_in_place_is_predicted_afresh(data_dir, tmp_path):
    """The review's stale number: an uncompressed DICOM whose pixels change keeps its size, so a cache keyed by
    (id, label, size) kept the old P(PNEUMONIA). The caches' key now sees the content."""
    import os

    from pneumo_core.data.images import load_grayscale
    from pneumo_core.inference.predictors import Predictor, predict_frame
    from pneumo_core.models.sources import bundled_source

    normal, pneumonia = (files[0] for files in _some(data_dir, 1))
    uid = "1.2.826.0.1.3680043.8.498.1"  # one UID both times: a random one varies the size
    path = write_dicom(tmp_path / "x.dcm", np.rint(load_grayscale(normal) * 255), uid=uid)
    frame = pd.DataFrame({"path": [str(path)], "image_id": ["x.dcm"], "label": ["NORMAL"], "split": ["test"]})
    before = (data_fingerprint(frame), content_fingerprint(frame))
    model = Predictor(bundled_source().load("binary/resnet18"))
    p0 = predict_frame(model, frame, cache_dir=tmp_path / "cache").p_positive[0]
    stat = path.stat()
    write_dicom(path, np.rint(load_grayscale(pneumonia) * 255), uid=uid)  # same size, other pixels
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old modification time
    assert path.stat().st_size == stat.st_size and data_fingerprint(frame) == before[0]
    assert content_fingerprint(frame) != before[1]
    p1 = predict_frame(model, frame, cache_dir=tmp_path / "cache").p_positive[0]
    assert p1 == pytest.approx(predict_frame(model, frame, use_cache=False).p_positive[0])
    assert abs(p1 - p0) > 0.05, (p0, p1)


def _some(data_dir, n=3):
    normal = sorted((data_dir / "test" / "NORMAL").glob("*.jpeg"))[:n]
    pneu = sorted((data_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[:n]
    return normal, pneu


def test_folder_per_class_and_csv(tmp_path, data_dir):
    normal, pneu = _some(data_dir)
    for cls, files in (("normal", normal), ("pneumonia", pneu)):
        (tmp_path / "ds" / cls).mkdir(parents=True)
        for f in files:
            (tmp_path / "ds" / cls / f.name).symlink_to(f)
    df = scan_folder(tmp_path / "ds")
    assert sorted(df.label.unique()) == ["NORMAL", "PNEUMONIA"] and len(df) == 6
    assert load_dataset(tmp_path / "ds").equals(df)

    csv = tmp_path / "labels.csv"
    pd.DataFrame({"path": [f"ds/normal/{f.name}" for f in normal] + [str(p) for p in pneu],
                  "label": ["normal"] * 3 + ["PNEUMONIA"] * 3}).to_csv(csv, index=False)
    c = read_label_csv(csv)
    assert list(c.label) == ["NORMAL"] * 3 + ["PNEUMONIA"] * 3
    assert (c.path.map(lambda p: __import__("pathlib").Path(p).is_file())).all()
    assert len(load_dataset(csv)) == 6

    (tmp_path / "bad.csv").write_text("file,class\na,b\n")
    with pytest.raises(DatasetError, match="missing column"):
        read_label_csv(tmp_path / "bad.csv")
    (tmp_path / "gone.csv").write_text("path,label\nnothere.png,NORMAL\n")
    with pytest.raises(DatasetError, match="do not exist"):
        read_label_csv(tmp_path / "gone.csv")


def test_rsna_layout_from_written_dicoms(tmp_path, data_dir):
    from pneumo_core.data.images import load_grayscale

    normal, pneu = _some(data_dir, 2)
    dcm = tmp_path / "stage_2_train_images"
    dcm.mkdir()
    rows = []
    for i, f in enumerate(normal + pneu):
        pid = f"pid{i:03d}"
        g = load_grayscale(f)
        mono1 = i % 2 == 1
        bits = 8 if i < 2 else 16
        v = np.rint(g * (2**bits - 1))
        write_dicom(dcm / f"{pid}.dcm", (2**bits - 1 - v if mono1 else v).astype(np.uint8 if bits == 8 else np.uint16),
                    photometric="MONOCHROME1" if mono1 else "MONOCHROME2", bits_stored=bits, patient_id=pid)
        target = int(f in pneu)
        rows += [{"patientId": pid, "x": 1.0, "y": 2.0, "width": 3.0, "height": 4.0, "Target": target}]
        if target:  # several boxes per pneumonia patient
            rows.append({"patientId": pid, "x": 5.0, "y": 6.0, "width": 7.0, "height": 8.0, "Target": 1})
    labels = tmp_path / "stage_2_train_labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    df = scan_rsna(dcm, labels)
    assert len(df) == 4 and list(df.label) == ["NORMAL", "NORMAL", "PNEUMONIA", "PNEUMONIA"]
    for (_, row), src in zip(df.iterrows(), normal + pneu):
        assert np.abs(load_grayscale(row.path) - load_grayscale(src)).max() < 1 / 255 + 1e-6
    (dcm / "pid003.dcm").unlink()
    with pytest.raises(DatasetError, match="pid003.dcm"):
        scan_rsna(dcm, labels)


def test_missing_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        scan_kermany(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        load_dataset(tmp_path / "empty")


def test_dataset_cli_json(data_dir):
    out = cli_result("dataset", data_dir, "--json")
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["splits"]["train"]["total"] == 5216 and s["patient_split"]["patient_overlap"] == 0
    assert s["splits"]["test"]["patients"] > 0 and s["patient_split"]["val"]["patients"] > 0


def test_dataset_cli_bad_folder(tmp_path):
    """A real ``python -m pneumo_core`` process: the entry point and its exit code."""
    out = subprocess.run([sys.executable, "-m", "pneumo_core", "dataset", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "not found" in out.stderr and "Traceback" not in out.stderr


def test_labels_with_spaces_count_and_foreign_labels_are_named(data_dir, tmp_path):
    normal, pneu = _some(data_dir, 2)
    rows = [(str(p), "normal") for p in normal] + [(str(pneu[0]), "PNEUMONIA "), (str(pneu[1]), "covid")]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(tmp_path / "labels.csv", index=False)
    frame = read_label_csv(tmp_path / "labels.csv")
    assert list(for_task(frame, BINARY)["target"]) == [0, 0, 1]  # "PNEUMONIA " counts as PNEUMONIA
    assert foreign_labels(frame) == {"COVID": 1}
