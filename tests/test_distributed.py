"""torchrun on CPU (gloo): two processes on a tiny subset. DDP training, resuming it, sharded evaluation.

Each torchrun start costs ~20-40 s on the shared 2-core machine (three Python processes importing torch);
the resume test (two starts, after the shared uninterrupted run) is marked slow.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pneumo_core import distributed
from pneumo_core.evaluation.predictions import read_predictions
from pneumo_core.models.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--task", "binary", "--arch", "custom_cnn", "--init", "scratch", "--limit", "40", "--image-size", "64",
        "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--lr-scaling", "linear", "--patience", "5"]
STEM = "runs/binary/custom_cnn_seed0"


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PNEUMO_CACHE": str(cache),
            "PNEUMO_DIST_TIMEOUT": "120"}


def _torchrun(args: list[str], cache: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(cache), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, data_dir) -> Path:
    """One uninterrupted two-process run of train.py (2 epochs)."""
    tmp = tmp_path_factory.mktemp("ddp")
    r = _torchrun(["train.py", *TINY, "--data-dir", str(data_dir), "--out", str(tmp / "out")], tmp / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    (tmp / "stdout.txt").write_text(r.stdout)
    return tmp


# ---------------------------------------------------------------- the helpers, one process

def test_one_process_helpers_are_no_ops():
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.is_main()
    distributed.barrier()
    assert distributed.all_gather(3) == [3] and distributed.gather("x") == ["x"] and distributed.broadcast(5) == 5
    assert distributed.shard(list(range(7))) == list(range(7))


def test_shards_cover_the_sequence_in_order():
    for n in (0, 1, 7, 40, 41):
        for world in (1, 2, 3):
            for align in (1, 8):
                parts = [list(distributed.shard(list(range(n)), r, world, align)) for r in range(world)]
                assert sum(parts, []) == list(range(n))
                assert all(p[0] % align == 0 for p in parts if p)  # cut at whole batches
    frame = pd.DataFrame({"a": range(10)})
    assert list(distributed.shard(frame, 1, 2)["a"]) == [5, 6, 7, 8, 9]


def test_strided_shares_are_equal_and_cover_everything():
    perm = [4, 0, 3, 1, 2]
    shares = [distributed.strided_padded(perm, r, 2) for r in range(2)]
    assert shares == [[4, 3, 2], [0, 1, 4]]  # padded with the head, as DistributedSampler does
    assert set(sum(shares, [])) == set(perm)


# ---------------------------------------------------------------- torchrun

@pytest.mark.timeout(400)
def test_two_process_training_writes_one_checkpoint(ddp_run):
    out = ddp_run / "out"
    ck = load_checkpoint(out / "checkpoints/binary/custom_cnn_seed0.pt")
    assert (ck.meta.arch, ck.meta.seed) == ("custom_cnn", 0) and ck.meta.recipe["world_size"] == 2
    assert sorted(p.name for p in (out / "checkpoints/binary").iterdir()) == ["custom_cnn.pt", "custom_cnn_seed0.pt"]
    m = json.loads((out / STEM / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["per_rank_batch"] == 8 and m["effective_batch"] == 16 and m["lr_used"] == 2e-3
    assert m["config"]["lr_scaling"] == "linear" and m["config"]["lr"] == 1e-3
    assert [h["epoch"] for h in json.loads((out / STEM / "history.json").read_text())] == [1, 2]
    assert not (out / STEM / "last.pt").exists()
    for split in ("val", "test"):
        p = read_predictions(out / f"predictions/binary/custom_cnn_seed0_{split}.csv")
        assert p.frame["checkpoint"].iloc[0] == ck.fingerprint and p.frame["image_id"].is_unique
    stdout = (ddp_run / "stdout.txt").read_text()
    assert stdout.count("done in") == 1 and stdout.count("best seed ->") == 1  # rank 0 alone speaks


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_interrupted_two_process_run_resumes(ddp_run, tmp_path, data_dir):
    """Kill rank 0 after epoch 1 (torchrun then stops rank 1), resume with --resume: the history equals
    the uninterrupted run's."""
    crash = tmp_path / "crash_after_epoch_1.py"
    crash.write_text(
        "import os, sys\n"
        "import train as cli\n"
        "from pneumo_core.training import loop\n"
        "def dying(cfg, resume=False, log=print):\n"
        "    def log_then_die(msg):\n"
        "        print(msg, flush=True)\n"
        "        if 'epoch 1/' in msg:\n"
        "            os._exit(3)\n"
        "    return loop.train(cfg, resume=resume, log=log_then_die)\n"
        "cli.train = dying\n"
        "raise SystemExit(cli.main(sys.argv[1:]))\n")
    out = tmp_path / "out"
    args = [*TINY, "--data-dir", str(data_dir), "--out", str(out)]
    r = _torchrun([str(crash), *args], tmp_path / "cache")
    assert r.returncode != 0
    assert (out / STEM / "last.pt").exists() and not (out / "checkpoints/binary/custom_cnn_seed0.pt").exists()
    r = _torchrun(["train.py", *args, "--resume"], tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming custom_cnn_seed0 (binary) after epoch 1" in r.stdout
    hist = json.loads((out / STEM / "history.json").read_text())
    straight = json.loads((ddp_run / "out" / STEM / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    np.testing.assert_allclose([h["train_loss"] for h in hist], [h["train_loss"] for h in straight], rtol=1e-3)
    np.testing.assert_allclose([h["val_loss"] for h in hist], [h["val_loss"] for h in straight], rtol=1e-3)
    assert json.loads((out / STEM / "metrics.json").read_text())["world_size"] == 2
    load_checkpoint(out / "checkpoints/binary/custom_cnn_seed0.pt")


@pytest.mark.timeout(400)
def test_sharded_evaluation_equals_one_process(tmp_path, data_dir, tiny_zoo, capsys):
    """40 test images (20 per class, linked into a folder-per-class dataset); batch 8, so the shares are
    2 and 3 whole batches."""
    for cls in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for f in sorted((data_dir / "test" / cls).glob("*.jpeg"))[:20]:
            (tmp_path / "data" / cls / f.name).symlink_to(f)
    ckpt = tiny_zoo / "checkpoints/binary/custom_cnn_seed0.pt"
    common = ["evaluate", "--checkpoint", str(ckpt), "--data-dir", str(tmp_path / "data"), "--batch-size", "8"]
    one = subprocess.run([sys.executable, "-m", "pneumo_core", *common, "--out", str(tmp_path / "one.csv")], cwd=ROOT,
                         env=_env(tmp_path / "cache1"), capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _torchrun(["-m", "pneumo_core", *common, "--out", str(tmp_path / "two.csv")], tmp_path / "cache2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "rank 0/2: 16 images" in two.stderr and "rank 1/2: 24 images" in two.stderr
    assert two.stdout.count("wrote") == 1
    a, b = read_predictions(tmp_path / "one.csv"), read_predictions(tmp_path / "two.csv")
    assert len(a.frame) == 40 and list(a.frame["image_id"]) == list(b.frame["image_id"])
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6, rtol=0)
    assert a.frame.drop(columns=[c for c in a.frame if c.startswith("prob_")]).equals(
        b.frame.drop(columns=[c for c in b.frame if c.startswith("prob_")]))
    # no image the model's task can read: one line, exit 2
    (tmp_path / "other" / "OTHER").mkdir(parents=True)
    (tmp_path / "other" / "OTHER" / "a.jpeg").symlink_to(sorted((data_dir / "test" / "NORMAL").glob("*.jpeg"))[0])
    from pneumo_core.cli.main import main

    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data-dir", str(tmp_path / "other"),
                 "--out", str(tmp_path / "none.csv")]) == 2
    assert "no images for task binary" in capsys.readouterr().err


def test_bad_lr_scaling_is_a_pneumo_error(tmp_path, data_dir):
    from pneumo_core.errors import PneumoError
    from pneumo_core.training.loop import TrainConfig, train

    with pytest.raises(PneumoError, match="lr_scaling"):
        train(TrainConfig(data_dir=str(data_dir), out=str(tmp_path), lr_scaling="sqrt"))


@pytest.mark.timeout(200)
def test_sync_bn_on_cpu_is_a_one_line_error(tmp_path, data_dir):
    r = _torchrun(["train.py", *TINY, "--sync-bn", "--device", "cpu", "--data-dir", str(data_dir),
                   "--out", str(tmp_path)], tmp_path / "cache", timeout=150)
    assert r.returncode != 0 and "error: --sync-bn needs CUDA" in r.stderr
    assert not (tmp_path / "runs").exists()
