"""``predict``, ``evaluate`` and ``export`` subcommands."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from pneumo_core.cli.registry import command, int_range, tqdm_progress
from pneumo_core.errors import PneumoError
from pneumo_core.files import atomic_write, dumps, unique_names, writable_file, writable_folder


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint file, DIR/task/arch (a train.py output folder) or hub:REPO_ID/task/arch")
    p.add_argument("images", nargs="+")
    p.add_argument("--cam", default=None, help="write an overlay PNG per image with this CAM method (e.g. gradcam)")
    p.add_argument("--out", default="predictions_out", help="folder for overlays (default ./predictions_out)")
    p.add_argument("--json", action="store_true")


@command("predict", _predict_args)
def _predict(args: argparse.Namespace) -> int:
    """Predict X-ray files with one checkpoint: probabilities, verdict at its threshold, OOD score, a CAM overlay."""
    from pneumo_core.data.images import load_grayscale
    from pneumo_core.inference.predictors import Predictor
    from pneumo_core.explain.ood import default_gate
    from pneumo_core.models.sources import resolve_checkpoint

    if args.cam:  # before the model loads: a typo costs nothing
        from pneumo_core.explain.cams import METHODS

        if args.cam not in METHODS:
            print(f"error: unknown CAM method {args.cam!r}; choose one of {', '.join(METHODS)}", file=sys.stderr)
            return 2
        writable_folder(args.out)
    predictor = Predictor(resolve_checkpoint(args.checkpoint))
    gate = default_gate()
    results, failed = [], 0
    stems = dict(unique_names([(Path(p).stem, p) for p in args.images]))  # one overlay per input, names apart
    for stem, path in stems.items():
        entry: dict = {"image": path}
        try:
            _predict_one(predictor, gate, path, load_grayscale(path), entry, args, stem)
        except PneumoError as exc:  # this image (or this model on it) failed: say so, go on with the rest
            entry = {"image": path, "error": str(exc)}
            failed += 1
        results.append(entry)
    if args.json:
        print(dumps({"checkpoint": args.checkpoint, "model": predictor.name, "task": predictor.task.name,
                     "results": results}, indent=2))
    else:
        for r in results:
            if "error" in r:
                print(f"{r['image']}: ERROR {r['error']}")
                continue
            probs = ", ".join(f"{c} {p:.3f}" for c, p in r["probabilities"].items())
            flag = " [does not look like a chest X-ray]" if r.get("ood_flag") else ""
            print(f"{r['image']}: {r['predicted']} ({probs}){flag}" + (f" -> {r['overlay']}" if "overlay" in r else ""))
    return 0 if failed == 0 else 1


def _predict_one(predictor, gate, path: str, gray: np.ndarray, entry: dict, args: argparse.Namespace,
                 stem: str) -> None:
    """Fill ``entry`` with one image's probabilities, OOD score and (with --cam) overlay."""
    from PIL import Image

    probs = predictor.predict_grays([gray])[0]
    entry["probabilities"] = {c: float(p) for c, p in zip(predictor.classes, probs)}
    entry["predicted"] = predictor.classes[int(np.argmax(probs))]
    if predictor.task.is_binary:
        entry["threshold"] = predictor.meta.threshold
        entry["predicted_at_threshold"] = predictor.classes[int(probs[1] >= predictor.meta.threshold)]
    if gate is not None:
        score = float(gate.score([gray])[0])  # infinity (flagged) for an image it cannot score
        entry["ood_score"], entry["ood_flag"] = score, bool(gate.flagged(score))
    if args.cam:
        from pneumo_core.explain.cams import explain, overlay

        cam = explain(predictor, gray, args.cam)
        png = Path(args.out) / f"{stem}_{args.cam}.png"
        picture = Image.fromarray(overlay(gray, cam.normalised))
        atomic_write(png, lambda tmp: picture.save(tmp, format="PNG"))
        entry["overlay"], entry["cam_class"] = str(png), cam.class_name
        if cam.degenerate:
            entry["cam_warning"] = cam.message


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="file, DIR/task/arch or hub:REPO_ID/task/arch")
    p.add_argument("--data-dir", required=True, help="a Kermany-layout folder (or folder-per-class / CSV)")
    p.add_argument("--split", default="test", help="train | val | test (Kermany: val is our patient-aware split)")
    p.add_argument("--out", required=True, help="prediction file to write (.csv or .parquet)")
    p.add_argument("--batch-size", type=int_range(1, 1024), default=16)
    p.add_argument("--workers", type=int_range(0, 64), default=0)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: about 2x faster on a CPU with native bf16, probabilities approximate (up to 0.19 "
                        "off for EfficientNet-Lite0; see bench/inference_bench.py)")


@command("evaluate", _evaluate_args)
def _evaluate(args: argparse.Namespace) -> int:
    """Predict a dataset split into one prediction file. Under torchrun each process predicts its
    contiguous share (cut at whole batches) and rank 0 gathers them into the file one process would write."""
    from pneumo_core import distributed

    writable_file(args.out)  # before the work: a wrong --out costs nothing
    distributed.init("cpu")
    try:
        return _evaluate_in_group(args)
    finally:
        distributed.shutdown()


def _evaluate_in_group(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    import pandas as pd

    from pneumo_core import distributed
    from pneumo_core.data.datasets import for_task, foreign_labels, is_kermany, kermany_splits, load_dataset
    from pneumo_core.evaluation.predictions import validate, write_predictions
    from pneumo_core.inference.predictors import Predictor, predict_frame
    from pneumo_core.models.sources import resolve_checkpoint

    predictor = Predictor(resolve_checkpoint(args.checkpoint), precision=args.precision)
    if is_kermany(args.data_dir):
        splits = kermany_splits(args.data_dir)
        if args.split not in splits:
            print(f"error: split {args.split!r} not in {', '.join(splits)}", file=sys.stderr)
            return 2
        frame = splits[args.split]
    else:
        frame = load_dataset(args.data_dir)
    rank, world = distributed.rank(), distributed.world_size()
    if "label" in frame and (foreign := foreign_labels(frame)) and rank == 0:
        print(f"note: {sum(foreign.values())} image(s) left out, their labels mean nothing to any task: "
              + ", ".join(f"{k!r} ({v})" for k, v in list(foreign.items())[:5]), file=sys.stderr)
    frame = for_task(frame, predictor.task) if "label" in frame else frame  # as predict_frame would
    if world > 1:
        # shares of whole batches: every image meets the batch it would meet in one process
        # (the prediction cache is keyed by the share's own data fingerprint)
        frame = distributed.shard(frame, align=args.batch_size).reset_index(drop=True)
        print(f"rank {rank}/{world}: {len(frame)} images", file=sys.stderr, flush=True)
    table = None
    if len(frame):
        with tqdm_progress("predicting") if rank == 0 else nullcontext(None) as progress:
            table = predict_frame(predictor, frame, split=args.split, batch_size=args.batch_size,
                                  num_workers=args.workers, progress=progress)
    if world > 1:
        parts = distributed.gather(None if table is None else table.frame)
        if rank == 0:
            table = validate(pd.concat([p for p in parts if p is not None], ignore_index=True), args.out)
    rc = 0
    if rank == 0:
        if table is None:
            print(f"error: {args.data_dir}: no images for task {predictor.task.name}", file=sys.stderr)
            rc = 2
        else:
            try:
                write_predictions(table, args.out)
                print(f"wrote {args.out} ({len(table.frame)} predictions)")
            except OSError as exc:  # checked writable at the start; the disk filled up since: keep the work
                rescue = Path(tempfile.gettempdir()) / f"pneumo-{Path(args.out).name}"
                write_predictions(table, rescue)
                print(f"error: {args.out} could not be written ({exc.strerror or exc}); the {len(table.frame)} "
                      f"predictions are in {rescue}", file=sys.stderr)
                rc = 2
    return distributed.broadcast(rc)  # the others wait here until the file is written


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", choices=["torchscript", "onnx", "safetensors"], required=True)
    p.add_argument("--out", required=True)


@command("export", _export_args)
def _export(args: argparse.Namespace) -> int:
    """Write a checkpoint as TorchScript, ONNX or fp16 safetensors."""
    from pneumo_core.models.export import export
    from pneumo_core.models.sources import resolve_checkpoint

    writable_file(args.out)
    path = export(resolve_checkpoint(args.checkpoint), args.format, args.out)
    print(f"wrote {path}")
    return 0

