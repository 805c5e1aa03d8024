"""``adapt``: label-free adaptation of the operating point to the test images (issue 26, item 8): Saerens et al.'s
prior adjustment over the committed prediction files, AdaBN over the bundled checkpoints' re-estimated BatchNorm
statistics (predictions written once under ``experiments/adaptation/``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumo_core.cli.registry import command, int_range, tqdm_progress
from pneumo_core.files import ASSETS, EXPERIMENTS, atomic_write, dumps

EXPERIMENT = EXPERIMENTS / "adaptation"  # = evaluation.adaptation.ADABN_ROOT's parent
METHODS = ("saerens", "adabn")


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="KEY",
                   help="binary/ARCH (its bundled seed), binary/ARCH/seedN, or binary/ensemble (Saerens only); "
                        "default: every bundled binary model")
    p.add_argument("--method", choices=METHODS, default=None, help="default: both")
    p.add_argument("--root", default=str(ASSETS), help="folder with predictions/binary/*.csv (default assets/)")
    p.add_argument("--adabn-root", default=str(EXPERIMENT / "adabn"),
                   help="folder with the AdaBN test predictions (default experiments/adaptation/adabn)")
    p.add_argument("--bootstrap", type=int_range(1, 100_000), default=1000, metavar="N",
                   help="resamples of the test patients for the 95%% intervals, 1..100000 (default 1000)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--write-report", action="store_true",
                   help="write experiments/adaptation/report.md (every bundled model and seed, both methods)")
    p.add_argument("--infer", metavar="DATA_DIR", default=None,
                   help="first run AdaBN on the test images of this Kermany folder (pixels only; minutes on a CPU) "
                        "and write its predictions under --adabn-root")
    p.add_argument("--device", default="cpu", help="where --infer runs: cpu (default) or cuda (fp32, TF32 off)")


def _infer(data_dir: str, out_root: Path, keys: list[str], device: str = "cpu") -> None:
    import numpy as np
    import torch

    from pneumo_core.data.datasets import for_task, load_dataset
    from pneumo_core.data.tasks import get_task
    from pneumo_core.evaluation.artifacts import load_set
    from pneumo_core.evaluation.predictions import write_predictions
    from pneumo_core.inference.adabn import adabn_predictor
    from pneumo_core.inference.predictors import Predictor, predict_frame
    from pneumo_core.models.keys import ModelKey
    from pneumo_core.models.sources import bundled_source

    frame = load_dataset(data_dir)
    frame = for_task(frame[frame["split"] == "test"], get_task("binary"))
    src = bundled_source()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 as on the CPU
    for key in keys:
        base = Predictor(src.load(key), device=device)
        with tqdm_progress(f"{key}: AdaBN statistics") as progress:
            adapted = adabn_predictor(base, frame, progress=progress)
        with tqdm_progress(f"{key}: adapted predictions") as progress:
            table = predict_frame(adapted, frame, "test", progress=progress, use_cache=False)
        written = out_root / ModelKey("binary", base.meta.arch, base.meta.seed).prediction_file("test")
        table.frame["path"] = table.frame["image_id"]  # relative, as in assets/predictions: no machine's folders
        write_predictions(table, written)
        # the same images, the unadapted model: its committed file must match (same pixels, same path)
        committed = load_set(ASSETS, "binary", base.meta.arch, base.meta.seed, "test")
        check = predict_frame(base, frame.head(16), "test", use_cache=False)
        ref = committed.frame.set_index("image_id").loc[check.frame["image_id"], "prob_PNEUMONIA"].to_numpy()
        moved = committed.frame.set_index("image_id").loc[table.frame["image_id"], "prob_PNEUMONIA"].to_numpy()
        print(f"wrote {written.name}: {len(table.frame)} images; unadapted vs committed file on 16 images: max "
              f"|diff| {np.abs(check.p_positive - ref).max():.1e}; AdaBN moved P(pneumonia) by "
              f"{np.abs(table.p_positive - moved).mean():.3f} on average")


@command("adapt", _args)
def _run(args: argparse.Namespace) -> int:
    """Label-free adaptation to the test images (Saerens prior adjustment, AdaBN): test sensitivity, specificity and
    accuracy at the validation threshold and at the adapted operating point, with 95 % intervals over patients."""
    from pneumo_core.evaluation import adaptation

    root, adabn_root = Path(args.root), Path(args.adabn_root)
    keys = [args.model] if args.model else adaptation.bundled_keys(root)
    if args.infer:
        _infer(args.infer, adabn_root, [adaptation.source_key(k) for k in keys], args.device)
    methods = [args.method] if args.method else list(METHODS)
    if args.write_report:
        text = adaptation.report_markdown(root, adabn_root, n_boot=args.bootstrap)
        out = EXPERIMENT / "report.md"
        atomic_write(out, lambda tmp: Path(tmp).write_text(text))
        print(f"wrote {out}")
        return 0
    rows = []
    for key in keys:
        for method in methods:
            try:
                rows.append(adaptation.evaluate(root, adabn_root, key, method, n_boot=args.bootstrap))
            except FileNotFoundError as exc:
                print(f"{key} {method}: {exc}", file=sys.stderr)
    if args.json:
        print(dumps([r.to_dict() for r in rows], indent=2))
        return 0
    for r in rows:
        print(adaptation.row_text(r))
    return 0
