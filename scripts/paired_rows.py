"""The paired differences quoted in docs/results.md's targets, through the zoo's rules (selection.py):
the EfficientNet-Lite0 3-seed ensemble against the four-architecture binary ensemble (AUROC, accuracy at each one's
validation threshold), and the hierarchical model against the three-class ensemble (macro-F1, VIRUS F1).
    python scripts/paired_rows.py [ROOT]        (default assets/)
"""
from __future__ import annotations

import sys

from pneumo_core.evaluation import artifacts, selection
from pneumo_core.evaluation.bootstrap import paired_difference
from pneumo_core.evaluation.predictions import align, ensemble, read_predictions


def _show(name: str, d: dict) -> None:
    print(f"{name}: {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")


def main(root: str = "assets") -> None:
    seeds = artifacts.seeds_of(root, "binary", "efficientnet_lite0")
    eff = {split: ensemble([artifacts.load_set(root, "binary", "efficientnet_lite0", s, split) for s in seeds])
           for split in ("val", "test")}
    members = selection.ensemble_members(root, "binary")
    ens = {split: selection.ensemble_set(root, members, split) for split in ("val", "test")}
    a, b = align([eff["test"], ens["test"]])
    for metric in ("auroc", "accuracy"):
        _show(f"binary: EfficientNet-Lite0 seed ensemble - {selection.ensemble_name(members)}, {metric}",
              paired_difference(a.y_true, (a.probs, selection.threshold_on(eff["val"])),
                                (b.probs, selection.threshold_on(ens["val"])), a.classes, metric))
    members = selection.ensemble_members(root, "three_class")
    h, t = align([read_predictions(f"{root}/predictions/three_class/hierarchical_test.csv"),
                  selection.ensemble_set(root, members, "test")])
    for metric in ("macro_f1", "f1_VIRUS"):
        _show(f"three-class: hierarchical - {selection.ensemble_name(members)}, {metric}",
              paired_difference(h.y_true, (h.probs, None), (t.probs, None), h.classes, metric))


if __name__ == "__main__":
    main(*sys.argv[1:2])
