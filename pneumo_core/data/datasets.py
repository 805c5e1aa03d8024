"""Datasets as tables: Kermany layout, folder-per-class, CSV of path,label, and the RSNA DICOM layout.

Every reader returns a :class:`pandas.DataFrame` with the columns
``path`` (absolute), ``image_id`` (stable, relative), ``split``, ``label`` (upper-case class name) and
``patient`` (``split/<id>``; for Kermany the ``personN`` / ``IM-NNNN`` number of the file name).
:class:`pneumo_core.data.loader.ImageDataset` turns such a table into model inputs.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pneumo_core.errors import DatasetError
from pneumo_core.data.tasks import TASKS, Task

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".dcm", ".dicom", ".bmp", ".tif", ".tiff"}
KERMANY_SPLITS = ("train", "val", "test")
COLUMNS = ["path", "image_id", "split", "label", "patient"]

_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_"),
    re.compile(r"^(NORMAL2-IM-\d+)-"),
    re.compile(r"^(IM-\d+)-"),
)


def kermany_label(filename: str, folder: str) -> str:
    """NORMAL / BACTERIA / VIRUS from the class folder and, for PNEUMONIA, the file name."""
    folder = folder.upper()
    if folder == "NORMAL":
        return "NORMAL"
    subtype = subtype_of(filename)
    if subtype in ("BACTERIA", "VIRUS"):
        return subtype
    raise DatasetError(f"{folder}/{filename}: a PNEUMONIA file name must say 'bacteria' or 'virus'")


def kermany_patient(filename: str) -> str:
    """Patient id from a Kermany file name (``person12_…``, ``IM-0115-…``, ``NORMAL2-IM-0337-…``)."""
    for pat in _PATIENT_PATTERNS:
        m = pat.match(filename)
        if m:
            return m.group(1)
    return Path(filename).stem  # unknown naming: every file is its own patient


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan_kermany(root: str | Path, splits: Sequence[str] = KERMANY_SPLITS) -> pd.DataFrame:
    """Index ``ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*``. Patient ids are ``split/personN``: Kermany numbers
    ``personN`` once per subtype, so the key merges a BACTERIA and a VIRUS child of the same number (a
    stricter patient-aware split, never a leak)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    rows = []
    for split in splits:
        sdir = root / split
        if not sdir.is_dir():
            continue
        for cdir in sorted(p for p in sdir.iterdir() if p.is_dir()):
            if cdir.name.upper() not in ("NORMAL", "PNEUMONIA"):
                continue
            for f in _images_in(cdir):
                rows.append((str(f.resolve()), f"{split}/{cdir.name}/{f.name}", split,
                             kermany_label(f.name, cdir.name), f"{split}/{kermany_patient(f.name)}"))
    if not rows:
        raise DatasetError(
            f"{root}: no images in the Kermany layout ROOT/{{train,val,test}}/{{NORMAL,PNEUMONIA}}/"
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def is_kermany(root: str | Path) -> bool:
    root = Path(root)
    return any((root / s / c).is_dir() for s in KERMANY_SPLITS for c in ("NORMAL", "PNEUMONIA"))


def scan_folder(root: str | Path, split: str = "all") -> pd.DataFrame:
    """Any folder-per-class dataset: ``ROOT/<class>/*``; the folder name is the label."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    rows = []
    for cdir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in _images_in(cdir):
            rows.append((str(f.resolve()), f"{cdir.name}/{f.name}", split, cdir.name.upper(),
                         f"{split}/{f.stem}"))
    if not rows:
        raise DatasetError(f"{root}: no class folders with images (expected ROOT/<class>/<image>)")
    return pd.DataFrame(rows, columns=COLUMNS)


def read_label_csv(csv_path: str | Path, split: str = "all") -> pd.DataFrame:
    """A CSV with columns ``path,label`` (paths relative to the CSV's folder or absolute)."""
    csv_path = Path(csv_path).expanduser()
    try:
        df = pd.read_csv(csv_path)
    except FileNotFoundError:
        raise DatasetError(f"{csv_path}: label file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: not a readable CSV ({exc})") from None
    missing = {"path", "label"} - set(df.columns)
    if missing:
        raise DatasetError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}; need path,label")
    base = csv_path.parent
    paths = [Path(p) if Path(p).is_absolute() else base / p for p in df["path"].astype(str)]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise DatasetError(f"{csv_path}: {len(absent)} listed file(s) do not exist, e.g. {absent[0]}")
    out = pd.DataFrame({
        "path": [str(p.resolve()) for p in paths],
        "image_id": df["path"].astype(str),
        "split": df["split"].astype(str) if "split" in df.columns else split,
        "label": df["label"].astype(str).str.strip().str.upper(),  # "pneumonia " is PNEUMONIA
    })
    out["patient"] = (df["patient"].astype(str) if "patient" in df.columns
                      else [Path(p).stem for p in out["image_id"]])
    out["patient"] = out["split"] + "/" + out["patient"]
    return out[COLUMNS]


def scan_rsna(dicom_dir: str | Path, labels_csv: str | Path, split: str = "all") -> pd.DataFrame:
    """RSNA Pneumonia layout: ``<patientId>.dcm`` files plus ``stage_2_train_labels.csv``.

    The CSV has one row per box (several per patient); a patient is PNEUMONIA if any row has Target 1.
    """
    dicom_dir, labels_csv = Path(dicom_dir).expanduser(), Path(labels_csv).expanduser()
    if not dicom_dir.is_dir():
        raise DatasetError(f"{dicom_dir}: DICOM folder not found")
    try:
        df = pd.read_csv(labels_csv)
    except FileNotFoundError:
        raise DatasetError(f"{labels_csv}: label file not found") from None
    missing = {"patientId", "Target"} - set(df.columns)
    if missing:
        raise DatasetError(f"{labels_csv}: missing column(s) {', '.join(sorted(missing))}")
    target = df.groupby("patientId", sort=True)["Target"].max()
    rows, absent = [], []
    for pid, t in target.items():
        f = dicom_dir / f"{pid}.dcm"
        if not f.is_file():
            absent.append(pid)
            continue
        rows.append((str(f.resolve()), f"{pid}.dcm", split, "PNEUMONIA" if int(t) == 1 else "NORMAL",
                     f"{split}/{pid}"))
    if absent:
        raise DatasetError(
            f"{labels_csv}: {len(absent)} labelled patient(s) have no DICOM in {dicom_dir}, e.g. {absent[0]}.dcm"
        )
    if not rows:
        raise DatasetError(f"{labels_csv}: no labelled patients")
    return pd.DataFrame(rows, columns=COLUMNS)


def load_dataset(source: str | Path, labels_csv: str | Path | None = None) -> pd.DataFrame:
    """Pick the reader by what ``source`` is: Kermany root, RSNA folder + CSV, CSV file, class folders."""
    source = Path(source).expanduser()
    if labels_csv is not None:
        return scan_rsna(source, labels_csv)
    if source.is_file() and source.suffix.lower() == ".csv":
        return read_label_csv(source)
    if not source.exists():
        raise DatasetError(f"{source}: dataset folder not found")
    if is_kermany(source):
        return scan_kermany(source)
    return scan_folder(source)


def patient_split(
    frame: pd.DataFrame, val_fraction: float = 0.12, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve a validation set out of ``frame``, patient-aware and stratified by class.

    Patients are visited in a seeded random order; one is taken while it adds images of a class still
    below its goal (``val_fraction`` of that class) and pushes no class more than 1 % past its goal.
    Patients with images of several classes (bacteria and virus) are why a greedy fill is needed.
    """
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be between 0 and 1")
    per_patient = frame.groupby(["patient", "label"]).size().unstack(fill_value=0)
    labels = list(per_patient.columns)
    totals = per_patient.sum(axis=0).to_numpy()
    goal = np.round(val_fraction * totals)
    slack = np.maximum(2, np.ceil(0.01 * totals))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(per_patient))
    counts_ = per_patient.to_numpy()
    taken = np.zeros(len(labels))
    val_patients: set[str] = set()
    for i in order:
        c = counts_[i]
        if np.any((c > 0) & (taken < goal)) and np.all(taken + c <= goal + slack):
            val_patients.add(per_patient.index[i])
            taken += c
    is_val = frame["patient"].isin(val_patients)
    train, val = frame[~is_val].copy(), frame[is_val].copy()
    overlap = set(train["patient"]) & set(val["patient"])
    assert not overlap, f"patient overlap between train and val: {sorted(overlap)[:5]}"
    train["split"], val["split"] = "train", "val"
    return train.reset_index(drop=True), val.reset_index(drop=True)


def kermany_splits(root: str | Path, val_fraction: float = 0.12, seed: int = 0) -> dict[str, pd.DataFrame]:
    """train / val (patient-aware, carved from train) / test / val_official tables of a Kermany root."""
    frame = scan_kermany(root)
    train, val = patient_split(frame[frame["split"] == "train"], val_fraction, seed)
    return {
        "train": train,
        "val": val,
        "test": frame[frame["split"] == "test"].reset_index(drop=True),
        "val_official": frame[frame["split"] == "val"].reset_index(drop=True),
    }


def counts(frame: pd.DataFrame, classes: Sequence[str] = ("NORMAL", "BACTERIA", "VIRUS")) -> dict[str, int]:
    vc = frame["label"].value_counts()
    return {c: int(vc.get(c, 0)) for c in classes}


def dataset_summary(root: str | Path, val_fraction: float = 0.12, seed: int = 0) -> dict:
    """Images per split x class, patients per split, the patient-aware split and its overlap."""
    frame = scan_kermany(root)
    out: dict = {"root": str(Path(root).resolve()), "splits": {}}
    for split in KERMANY_SPLITS:
        part = frame[frame["split"] == split]
        out["splits"][split] = {**counts(part), "total": len(part), "patients": int(part["patient"].nunique())}
    train, val = patient_split(frame[frame["split"] == "train"], val_fraction, seed)
    overlap = len(set(train["patient"]) & set(val["patient"]))
    out["patient_split"] = {
        "val_fraction": val_fraction,
        "seed": seed,
        "train": {**counts(train), "total": len(train), "patients": int(train["patient"].nunique())},
        "val": {**counts(val), "total": len(val), "patients": int(val["patient"].nunique())},
        "patient_overlap": overlap,
    }
    return out


def data_fingerprint(frame: pd.DataFrame) -> str:
    """Short hash of (image id, label, file size) over a table: identifies the data a model saw (stored in
    checkpoints; the same for a copy of the data set). Caches use :func:`content_fingerprint`."""
    h = hashlib.sha256()
    for image_id, label, path in sorted(zip(frame["image_id"], frame["label"], frame["path"])):
        try:
            size = Path(path).stat().st_size
        except OSError:
            size = -1
        h.update(f"{image_id}|{label}|{size}\n".encode())
    return h.hexdigest()[:16]


#: bytes read from each end of a file for :func:`content_fingerprint`
SAMPLE_BYTES = 64 * 1024


def _file_stamp(path: str) -> str:
    """Size, modification time and a hash of the first and last :data:`SAMPLE_BYTES` of one file."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(SAMPLE_BYTES)
            if st.st_size > 2 * SAMPLE_BYTES:
                f.seek(-SAMPLE_BYTES, os.SEEK_END)
            tail = f.read(SAMPLE_BYTES)
    except OSError:
        return "missing"
    return f"{st.st_size}|{st.st_mtime_ns}|{hashlib.blake2b(head + tail, digest_size=12).hexdigest()}"


def content_fingerprint(frame: pd.DataFrame) -> str:
    """Short hash of (image id, label, size, mtime, sampled content) over a table: the key of caches computed
    from the files, so a file rewritten in place at the same size (an uncompressed DICOM whose pixels
    changed) is computed afresh. ~0.15 ms a 224-px Kermany file."""
    h = hashlib.sha256()
    for image_id, label, path in sorted(zip(frame["image_id"], frame["label"], frame["path"])):
        h.update(f"{image_id}|{label}|{_file_stamp(str(path))}\n".encode())
    return h.hexdigest()[:16]


def foreign_labels(frame: pd.DataFrame) -> dict[str, int]:
    """Labels no task knows (a typo, another disease), with their row counts: such rows are left out of every
    task, and a command says so rather than dropping them silently."""
    known = set().union(*(t.label_map for t in TASKS.values()))
    counts = frame["label"].astype(str).str.upper().value_counts()
    return {str(k): int(v) for k, v in counts.items() if k not in known}


def for_task(frame: pd.DataFrame, task: Task) -> pd.DataFrame:
    """Rows whose label means something for ``task`` (bacteria_virus drops NORMAL), with ``target``."""
    keep = frame["label"].map(task.accepts)
    out = frame[keep].copy()
    out["target"] = out["label"].map(task.target).astype(int)
    return out.reset_index(drop=True)


def subtype_of(image_id: str) -> str:
    """NORMAL / BACTERIA / VIRUS from a Kermany-style id or path ('' when the name does not say)."""
    parts = str(image_id).replace("\\", "/").split("/")
    name, folder = parts[-1], (parts[-2] if len(parts) > 1 else "")
    low = name.lower()
    if "virus" in low:
        return "VIRUS"
    if "bacteria" in low:
        return "BACTERIA"
    if folder.upper() == "NORMAL" or low.startswith(("im-", "normal2-")):
        return "NORMAL"
    return ""
