"""Issue #28's breakages on Predict, Compare, Errors and the slow CAM methods: the numbers and sentences
from pneumo_core, and the pages through AppTest."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pneumo_core.evaluation import selection
from pneumo_core.files import ASSETS
from pneumo_core.models.sources import bundled_source

ROOT = Path(__file__).resolve().parent.parent
SOURCE = bundled_source()
KEYS = {r.key for r in SOURCE.list() if r.seed is None}


def _app(page: str, timeout: int = 300, query: dict | None = None, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    at.switch_page(page).run()
    return at


# ---------------------------------------------------------------- 1. verdicts

def test_a_normal_verdict_shows_p_pneumonia_and_the_threshold_not_the_verdicts_probability():
    """"NORMAL 0.286" read as "29 % sure it is normal": the row now gives P(pneumonia), the threshold that
    decided, and why, from the bundled models' real thresholds."""
    from pneumo_core.inference.verdicts import verdict_rows, zoo_verdicts

    fixed = {"binary": [0.714, 0.286], "three_class": [0.5, 0.3, 0.2], "bacteria_virus": [0.4, 0.6]}
    verdicts = zoo_verdicts(ASSETS, KEYS, lambda key: np.array(fixed[key.split("/")[0]]))
    rows = {(r["task"], r["model"]): r for r in verdict_rows(verdicts)}
    binary = [z for z in selection.zoo_models(ASSETS, "binary") if {m.key for m in z.members} <= KEYS]
    assert binary
    for z in binary:
        r = rows[("binary", z.name)]
        assert r["P(pneumonia)"] == pytest.approx(0.286)  # not 0.714, the probability of NORMAL
        assert r["decides at"] == f"P(PNEUMONIA) ≥ {z.threshold:.3f}"
        assert r["verdict"] == ("PNEUMONIA" if 0.286 >= z.threshold else "NORMAL")
        assert r["why"] == f"P(PNEUMONIA) 0.286 {'≥' if 0.286 >= z.threshold else '<'} {z.threshold:.3f} → {r['verdict']}"
        assert "probability" not in r
    z3 = next(z for z in selection.zoo_models(ASSETS, "three_class") if {m.key for m in z.members} <= KEYS)
    three = rows[("three_class", z3.name)]
    assert three["decides at"] == "largest probability" and three["P(pneumonia)"] == pytest.approx(0.5)  # 1 - P(NORMAL)
    assert three["why"] == "P(NORMAL) 0.500 is the largest → NORMAL"
