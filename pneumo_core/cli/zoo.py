"""``results``, ``compare``, ``zoo-bundle`` and ``zoo-refresh``: commands over zoo folders."""
from __future__ import annotations

import argparse
import math
import sys

from pneumo_core.cli.registry import command, int_range, tqdm_progress


def _results_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", nargs="?", default=None, help="a zoo folder (train.py --out) or assets/ (default)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of Markdown")
    p.add_argument("--bootstrap", type=int_range(0, 100_000), default=1000, metavar="N",
                   help="resamples for the 95%% intervals, 0..100000 (default 1000; 0: none)")


@command("results", _results_args)
def _results(args: argparse.Namespace) -> int:
    """The results table: per model mean ± std over seeds on test with 95 % intervals, ensembles,
    the hierarchical model."""
    from pneumo_core.evaluation.results import results_table
    from pneumo_core.files import ASSETS

    table = results_table(args.root or ASSETS, args.bootstrap)
    print(table.to_csv(index=False) if args.csv else table.to_markdown(index=False))
    return 0


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root_a", help="zoo folder A (train.py --out, assets/, or a study's "
                                  "experiments/<study>/runs/<stage>)")
    p.add_argument("root_b", help="zoo folder B; differences are B - A")
    p.add_argument("--task", default="binary", help="binary | three_class | bacteria_virus (default binary)")
    p.add_argument("--arch", default=None, help="the architecture to compare, e.g. resnet18")
    p.add_argument("--ensembles", action="store_true",
                   help="instead of --arch: in ROOT_A, EfficientNet-Lite0's seed ensemble against the binary ensemble "
                        "and the hierarchical model against the three-class ensemble (the results discussion's "
                        "paired differences)")
    p.add_argument("--seeds", type=int_range(0, 10_000), nargs="+", default=None,
                   help="default: every seed with val and test files under both folders")
    p.add_argument("--metrics", nargs="+", default=None,
                   help="test metrics (default auroc accuracy); binary: also recall specificity f1; "
                        "three-class: also macro_f1 f1_<CLASS>")
    p.add_argument("--bootstrap", type=int_range(1, 100_000), default=1000, metavar="N",
                   help="resamples of the patients for the intervals and paired differences, 1..100000 (default 1000)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _interval(v: dict, key: str = "value", sign: str = "") -> str:
    if not all(math.isfinite(v[k]) for k in (key, "low", "high")):
        return "n/a"
    return f"{v[key]:{sign}.3f} [{v['low']:{sign}.3f}, {v['high']:{sign}.3f}]"


def _ensembles(args: argparse.Namespace) -> int:
    from pneumo_core.evaluation.comparison import ensemble_differences
    from pneumo_core.files import dumps

    rows = ensemble_differences(args.root_a, args.bootstrap)
    if args.json:
        print(dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"error: {args.root_a} holds neither ensemble's prediction files", file=sys.stderr)
        return 2
    for r in rows:
        print(f"{r['name']}, {r['metric']}: {_interval(r, 'diff', '+')} (test, {args.bootstrap} resamples of the "
              "patients)")
    return 0


@command("compare", _compare_args)
def _compare(args: argparse.Namespace) -> int:
    """Two folders' runs of one architecture, seed by seed: validation rule, test figures, paired differences."""
    from pneumo_core.data.tasks import TASKS
    from pneumo_core.evaluation.comparison import METRICS, compare_runs
    from pneumo_core.evaluation import selection
    from pneumo_core.files import dumps

    if args.task not in TASKS:
        print(f"error: unknown task {args.task!r}; one of: {', '.join(TASKS)}", file=sys.stderr)
        return 2
    if args.ensembles:
        return _ensembles(args)
    if args.arch is None:
        print("error: name the architecture to compare (--arch), or use --ensembles", file=sys.stderr)
        return 2
    r = compare_runs(args.root_a, args.root_b, args.task, args.arch, args.seeds, args.metrics or METRICS,
                     args.bootstrap)
    if args.json:
        print(dumps(r, indent=2))
        return 0
    rule = (f"threshold by {selection.THRESHOLD_RULE_TEXT} (each run's own file)" if r["binary"]
            else "the largest probability decides")
    print(f"{args.task}/{args.arch}: A = {r['A']}, B = {r['B']}; test n={r['n_test']}, {rule}, "
          f"{args.bootstrap} resamples of the patients; the rule keeps A unless B's validation log loss is lower "
          f"with a paired 95 % interval below 0")
    rows = [(f"seed {run['seed']}", run) for run in r["runs"]]
    if len(r["runs"]) > 1:
        rows.append((f"mean of seeds {', '.join(map(str, r['seeds']))}", r["mean"]))
    for label, run in rows:
        kept = (f"; B - A {_interval(run['val_diff'], 'diff', '+')} -> rule keeps {run['kept']}"
                if "kept" in run else "")
        print(f"{label}: validation log loss A {run['val_loss']['A']:.4f}, B {run['val_loss']['B']:.4f}{kept}")
        for m in run["diff"]:
            print(f"  {m:<12} A {_interval(run['test']['A'][m])}  B {_interval(run['test']['B'][m])}  "
                  f"B - A {_interval(run['diff'][m], 'diff', '+')}")
    return 0


def _bundle_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("zoo", help="the folder train.py --zoo wrote")
    p.add_argument("--data-dir", default="../shared/data/chest_xray")
    p.add_argument("--assets", default=None, help="default: the repo's assets/")
    p.add_argument("--leave-out", nargs="*", default=[], metavar="TASK/ARCH",
                   help="best checkpoints not to export (e.g. three_class/resnet18: assets/models stays under 100 MB)")
    p.add_argument("--repredict", action="store_true",
                   help="first rewrite every seed's prediction files through the fp32 inference path")


@command("zoo-bundle", _bundle_args)
def _bundle(args: argparse.Namespace) -> int:
    """Copy a trained zoo's predictions and logs into assets/, export the rule's best seeds as fp16
    safetensors with the rule's thresholds, add the hierarchical model's predictions, write
    assets/results.{csv,md}."""
    from pneumo_core.files import ASSETS
    from pneumo_core.training.zoo import bundle, repredict

    if args.repredict:
        with tqdm_progress("re-predicting") as progress:
            print(f"re-predicted {len(repredict(args.zoo, args.data_dir, progress))} prediction files")
    with tqdm_progress("predicting (the hierarchical model)") as progress:
        table = bundle(args.zoo, args.data_dir, args.assets or ASSETS, args.leave_out, progress)
    print(table.to_markdown(index=False))
    return 0


def _refresh_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="../shared/data/chest_xray")
    p.add_argument("--assets", default=None, help="default: the repo's assets/")


@command("zoo-refresh", _refresh_args)
def _refresh(args: argparse.Namespace) -> int:
    """Re-apply the zoo's rules to assets/ without a trained zoo: each bundled checkpoint's threshold,
    the hierarchical model's predictions, the results table."""
    from pneumo_core.files import ASSETS
    from pneumo_core.training.zoo import refresh_thresholds, write_hierarchical, write_results

    assets = args.assets or ASSETS
    for line in refresh_thresholds(assets):
        print(line)
    with tqdm_progress("hierarchical model") as progress:
        write_hierarchical(assets, args.data_dir, progress)
    print(write_results(assets).to_markdown(index=False))
    return 0


def _decisions_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", nargs="?", default=None, help="assets/ (default): its bundle and predictions/")
    p.add_argument("--spec", nargs="*", default=None, metavar="SPEC",
                   help="the studies whose picks to re-decide (default: every experiments/*/study.toml)")
    p.add_argument("--write", action="store_true", help="write assets/decisions.md and assets/decisions.csv")
    p.add_argument("--bootstrap", type=int_range(100, 100_000), default=1000, metavar="N",
                   help="resamples of the validation patients, 100..100000 (default 1000)")


@command("decisions", _decisions_args)
def _decisions(args: argparse.Namespace) -> int:
    """The decision log: every choice between runs re-decided by the one rule on validation log loss (default kept
    unless a patient-clustered paired bootstrap's 95 % interval excludes 0): the studies' picks
    (experiments/*/study.toml), then the seed of each bundled architecture, with what the bundle holds, the
    hierarchical model's stage A and each task's first model."""
    from pathlib import Path

    from pneumo_core.evaluation.decisions import decision_log, decisions_frame, decisions_markdown
    from pneumo_core.evaluation.selection import model_decisions
    from pneumo_core.files import ASSETS, atomic_write
    from pneumo_core.training.study import EXPERIMENTS, SPEC, load_study, questions

    root = Path(args.root or ASSETS)
    specs = args.spec if args.spec is not None else sorted(EXPERIMENTS.glob(f"*/{SPEC}"))
    log = decision_log(root, [q for f in specs for q in questions(load_study(f))], args.bootstrap)
    log += model_decisions(root, args.bootstrap)
    md = decisions_markdown(log)
    if args.write:
        csv = decisions_frame(log).to_csv(index=False)
        atomic_write(root / "decisions.md", lambda tmp: Path(tmp).write_text(md))
        atomic_write(root / "decisions.csv", lambda tmp: Path(tmp).write_text(csv))
        print(f"wrote {root / 'decisions.md'} and {root / 'decisions.csv'}")
    print(md)
    return 0


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["train", "pick", "bundle"],
                   help="train: every run of the spec, resumably; pick: the spec's choices on validation, "
                        "written as decisions.md and picked.json; bundle: the picked runs into assets/")
    p.add_argument("spec", help="a study spec, e.g. experiments/demo_zoo/study.toml (or its folder)")
    p.add_argument("--out", default=None,
                   help="where the study's runs/, decisions and picks go (default: the spec's folder)")
    p.add_argument("--data-dir", default="../shared/data/chest_xray")
    p.add_argument("--assets", default=None, help="bundle into this folder (default: the repo's assets/)")
    p.add_argument("--bootstrap", type=int_range(100, 100_000), default=1000, metavar="N",
                   help="pick: resamples of the validation patients, 100..100000 (default 1000)")


@command("zoo", _study_args)
def _study(args: argparse.Namespace) -> int:
    """Run a study spec: train its runs (resumable), pick among them on validation, bundle the picks into
    assets/."""
    from pneumo_core.files import ASSETS
    from pneumo_core.training.study import bundle_study, load_study, log_markdown, pick_study, train_study

    study = load_study(args.spec)
    assets = args.assets or ASSETS
    if args.action == "train":
        ran = train_study(study, args.data_dir, args.out)
        print(f"{study.name}: {len(ran)} run(s) trained; every run of the spec is done")
    elif args.action == "pick":
        rows, picked = pick_study(study, args.out, assets, args.bootstrap)
        print(log_markdown(study, rows))
        for k in picked:
            print(f"picked {k.task}/{k.arch}: seed {k.seed}" + (f" ({k.runs[k.seed]})" if k.seed is not None else ""))
    else:
        with tqdm_progress("predicting (picked runs, then the hierarchical model)") as progress:
            print(bundle_study(study, args.data_dir, args.out, assets, progress).to_markdown(index=False))
    return 0
