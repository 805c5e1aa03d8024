"""Shared fixtures. Tests read the Kermany data in place (never copied into the repo)."""
from __future__ import annotations

import os

# The Hub is never reached from tests: the Hub path runs for real against a local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# the session's shared tiny zoo (tests.zoo_fixture.tiny_zoo), trained once when a test first asks for it
pytest_plugins = ["tests.zoo_fixture"]
DATA_DIR = Path(os.environ.get("PNEUMO_DATA", ROOT.parent / "shared" / "data" / "chest_xray"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "test" / "NORMAL").is_dir():
        pytest.fail(f"Kermany data not found at {DATA_DIR}; set PNEUMO_DATA to the chest_xray folder")
    return DATA_DIR


@pytest.fixture(scope="session")
def normal_image(data_dir: Path) -> Path:
    return sorted((data_dir / "test" / "NORMAL").glob("*.jpeg"))[0]


@pytest.fixture(scope="session")
def pneumonia_image(data_dir: Path) -> Path:
    return sorted((data_dir / "test" / "PNEUMONIA").glob("*bacteria*.jpeg"))[0]


@pytest.fixture(scope="session")
def virus_image(data_dir: Path) -> Path:
    return sorted((data_dir / "test" / "PNEUMONIA").glob("*virus*.jpeg"))[0]
