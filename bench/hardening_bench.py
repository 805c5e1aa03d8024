#!/usr/bin/env python
"""Peak memory of one hostile input (issue 16): the loader, the CLI and the app's Predict page, each in a
fresh process, with the peak resident set size read from /proc/self/status (VmHWM).

    python -m bench.hardening_bench [--skip-files] [--skip-app] [--skip-report] [--skip-server] [--skip-eight]
Target: no single upload or CLI image takes a process past 2 GB; the server returns to its baseline after
hostile uploads (``--skip-server`` leaves out that part: the real server in headless Chromium, its resident
memory read from /proc before, during and after a visitor's hostile uploads). Inputs are made in a temporary folder:
the review's bombs (a 9.7 KB PNG of 8900 x 8900; a 1.2 MB deflated DICOM of 10 frames of 8000 x 8000), a
DICOM header promising 10 such frames, the largest images we accept (40 MP), a symlink to /dev/zero, a
FIFO; and ``report --bootstrap 200`` on 2 million rows (it ran out of memory at 12 GB before).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
from PIL import Image  # noqa: E402

from tests.bombs import (deflated_dicom_bomb, dicom_header_bomb, jpeg_in_dicom_bomb, png_bomb,  # noqa: E402
                         rle_dicom_bomb)
from tests.dicom_utils import write_dicom  # noqa: E402

PEAK = "import atexit, re, sys\natexit.register(lambda: print('PEAK_MB', int(re.search(r'VmHWM:\\s+(\\d+)', " \
       "open('/proc/self/status').read()).group(1)) // 1024, file=sys.stderr))\n"
MODEL = ROOT / "assets/models/checkpoints/binary/resnet18.safetensors"


def measure(code: str, *args: str, timeout: int = 600) -> tuple[int, float, str]:
    """(peak MB, seconds, last line of output) of ``code`` run in a fresh interpreter."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PEAK + code, *args], capture_output=True, text=True, timeout=timeout,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    dt = time.perf_counter() - t0
    peak = next((int(ln.split()[1]) for ln in r.stderr.splitlines() if ln.startswith("PEAK_MB")), -1)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()] or \
        [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("PEAK_MB")]
    return peak, dt, (lines[-1] if lines else "")[:150]


LOADER = ("from pneumo_core.data.images import load_grayscale\n"
          "try:\n    g = load_grayscale(sys.argv[1]); print('loaded', g.shape)\n"
          "except Exception as e:\n    print(type(e).__name__, str(e)[-90:])\n")
CLI = ("from pneumo_core.cli.main import main\n"
       "print('exit', main(['predict', '--checkpoint', sys.argv[2], sys.argv[1], '--cam', 'gradcam', "
       "'--out', sys.argv[3]]))\n")
APP = '''
from streamlit.testing.v1 import AppTest
from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec
at = AppTest.from_file("app.py", default_timeout=600)
at.run()
if sys.argv[1] != "-":
    data = open(sys.argv[1], "rb").read()
    at.session_state["uploads"] = [UploadedFile(UploadedFileRec(file_id="1", name=sys.argv[1].split("/")[-1],
                                                                type="image/png", data=data), None)]
    at.run()
print("exceptions", len(at.exception), "errors", [e.value[-70:] for e in at.error][:1])
'''
REPORT = ("from pneumo_core.cli.main import main\n"
          "print('exit', main(['report', sys.argv[1], '--bootstrap', '200']))\n")


def inputs(d: Path) -> dict[str, Path]:
    out = {"png bomb 8900^2 1-bit (review)": png_bomb(d / "bomb.png"),
           "DICOM header 10 x 8000^2 x 16 bit": dicom_header_bomb(d / "frames.dcm"),
           "deflated DICOM 10 x 8000^2 (review)": deflated_dicom_bomb(d / "deflated.dcm")}
    for variant in ("bare", "uv", "implicit"):  # issue 29: meta forms a hand-written reader missed
        out[f"deflated DICOM, {variant} meta (#29)"] = deflated_dicom_bomb(d / f"deflated_{variant}.dcm",
                                                                           variant=variant)
    out["RLE DICOM 16 MB -> 1 GB segment (#29)"] = rle_dicom_bomb(d / "rle.dcm", megabytes=16)
    out["JPEG-in-DICOM 12000^2 RGB frame, 64^2 header (#29)"] = jpeg_in_dicom_bomb(d / "jpeg_frame.dcm")
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (5000, 8000), dtype=np.uint8), "L")  # 40 MP, the most we decode
    big.save(d / "40mp.png", compress_level=1)
    out["largest accepted PNG 8000 x 5000"] = d / "40mp.png"
    Image.new("RGBA", (8000, 5000), (90, 90, 90, 200)).save(d / "40mp_rgba.png")
    out["largest accepted RGBA PNG 8000 x 5000"] = d / "40mp_rgba.png"
    Image.fromarray(rng.integers(0, 256, (5000, 8000, 3), dtype=np.uint8)).save(d / "40mp.jpg", quality=90)
    out["largest accepted RGB JPEG 8000 x 5000"] = d / "40mp.jpg"
    write_dicom(d / "16bit.dcm", rng.integers(0, 4096, (5600, 5600), dtype=np.uint16), bits_stored=12,
                window=(2048, 4096))
    out["16-bit DICOM 5600 x 5600 (60 MB)"] = d / "16bit.dcm"
    (d / "zero.png").symlink_to("/dev/zero")
    out["symlink to /dev/zero"] = d / "zero.png"
    os.mkfifo(d / "fifo.png")
    out["FIFO named .png"] = d / "fifo.png"
    out["a Kermany test image (baseline)"] = next((ROOT / "assets/examples").glob("*virus*.jpeg"))
    return out


def _rss_mb(pid: int, field: str = "VmRSS") -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith(field + ":"))) // 1024


def _server_pid(port: str) -> int:
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and f"--server.port\0{port}\0" in (p / "cmdline").read_text():
                return int(p.name)
        except OSError:
            continue
    raise RuntimeError(f"no streamlit server on port {port}")


def server_memory(files: dict[str, Path], rounds: int = 2) -> None:  # 2 rounds: 24 hostile uploads in a row
    """Each visitor opens Predict, uploads one file and waits for the page's answer; then leaves. The server's
    resident memory after every visit, and once all have left, against the baseline of an ordinary visit."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser_utils import app_server, body_text, chrome, wait_idle

    normal = files["a Kermany test image (baseline)"]
    hostile = [k for k in files if "symlink" not in k and "FIFO" not in k and "baseline" not in k
               and files[k].stat().st_size < 50 * 2**20]  # the browser refuses larger files (maxUploadSize)
    driver = chrome(1400, 1400)

    def visit(path: Path) -> str:
        driver.get(f"{url}/predict")
        WebDriverWait(driver, 300, 0.1).until(lambda d: "Try a sample" in body_text(d))
        driver.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(path))
        WebDriverWait(driver, 600, 0.1).until(lambda d: "Upload one or more frontal" not in body_text(d))
        wait_idle(driver, timeout=600, settle=1.0)
        return "answered" if "OOD score" in body_text(driver) else "refused"

    try:
        with app_server(timeout=120) as (url, _):
            pid = _server_pid(url.rsplit(":", 1)[1])
            for _ in range(2):  # models, caches and the upload path warm
                visit(normal)
            driver.get("about:blank")
            time.sleep(5)
            base = _rss_mb(pid)
            print(f"\nServer (streamlit run app.py, Chromium uploads on Predict): baseline after two ordinary visits "
                  f"{base} MB")
            for rnd in range(1, rounds + 1):  # the same visitors again: bounded memory stays flat
                for name in hostile:
                    what = visit(files[name])
                    print(f"  round {rnd}: {name:<38} {what:<8} server now {_rss_mb(pid):>5} MB "
                          f"(peak so far {_rss_mb(pid, 'VmHWM')} MB)")
            print(f"  the next ordinary visitor after them: {visit(normal)}")
            driver.get("about:blank")
            time.sleep(10)
            after = _rss_mb(pid)
            print(f"  all visitors gone, 10 s later: {after} MB, {after - base:+d} MB from the baseline")
            # Streamlit keeps a disconnected session (its uploads too) for server.disconnectedSessionTTL seconds
            # and drops expired ones when the next session disconnects
            ttl = int(subprocess.run([sys.executable, "-c", "from streamlit import config; "
                                      "print(config.get_option('server.disconnectedSessionTTL'))"],
                                     capture_output=True, text=True, cwd=ROOT).stdout.split()[-1])
            time.sleep(ttl + 5)
            visit(normal)
            driver.get("about:blank")
            time.sleep(5)
            after = _rss_mb(pid)
            print(f"  after the session TTL ({ttl} s) and one ordinary visit: {after} MB, {after - base:+d} MB "
                  "from the baseline")
    finally:
        driver.quit()


def eight_large_uploads(d: Path) -> None:
    """One visitor uploads eight 40-MP JPEGs at once on Predict, waits for the verdicts and leaves; no other
    visitor comes. The server's resident memory before, at the answer, and 10 s / 30 s after (the review saw
    2.6 GB held until another visitor ran a page)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser_utils import app_server, body_text, chrome, wait_idle

    ramp = np.linspace(0, 255, 8000, dtype=np.float32)[None, :] + np.linspace(0, 60, 5000, dtype=np.float32)[:, None]
    paths = []
    for i in range(8):
        Image.fromarray(np.clip(ramp + 10 * i, 0, 255).astype(np.uint8)).save(d / f"big{i}.jpg", quality=85)
        paths.append(d / f"big{i}.jpg")
    size = sum(p.stat().st_size for p in paths) / 2**20
    driver = chrome(1400, 1400)
    try:
        with app_server(timeout=120) as (url, _):
            pid = _server_pid(url.rsplit(":", 1)[1])
            driver.get(f"{url}/predict")
            WebDriverWait(driver, 300, 0.1).until(lambda d: "Try a sample" in body_text(d))
            time.sleep(20)  # the warm-up's imports and samples
            base = _rss_mb(pid)
            driver.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys("\n".join(str(p) for p in paths))
            WebDriverWait(driver, 900, 0.5).until(lambda d: body_text(d).count("OOD score") >= 8)
            wait_idle(driver, timeout=600, settle=1.0)
            answered = _rss_mb(pid)
            driver.get("about:blank")
            time.sleep(10)
            after10 = _rss_mb(pid)
            time.sleep(20)
            after30 = _rss_mb(pid)
            print(f"\nEight 40-MP JPEGs ({size:.0f} MB) in one upload on Predict: server {base} MB before, "
                  f"{answered} MB at the answer (peak {_rss_mb(pid, 'VmHWM')} MB), "
                  f"{after10} MB 10 s after the visitor left, "
                  f"{after30} MB after 30 s ({after30 - base:+d} MB), no other visitor")
    finally:
        driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-files", action="store_true", help="no loader / CLI table")
    ap.add_argument("--skip-app", action="store_true")
    ap.add_argument("--skip-report", action="store_true")
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--skip-eight", action="store_true", help="no eight-40-MP-uploads visit")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files = inputs(d)
        if not a.skip_files:
            print(f"{'input':<40} {'size':>9}  {'loader MB':>9} {'s':>5}  {'CLI MB':>7} {'s':>5}  result")
        for name, path in ([] if a.skip_files else files.items()):
            size = path.lstat().st_size if path.is_symlink() or not path.exists() else path.stat().st_size
            lp, lt, lr = measure(LOADER, str(path))
            cp, ct, cr = measure(CLI, str(path), str(MODEL), str(d / "out"))
            print(f"{name:<40} {size / 1024:>7.0f}KB  {lp:>9} {lt:>5.1f}  {cp:>7} {ct:>5.1f}  {lr} | {cr}")
        if not a.skip_app:
            print("\nPredict page (AppTest, bundled models), one upload:")
            for name in ("none (page only)", "a Kermany test image (baseline)", "png bomb 8900^2 1-bit (review)",
                         "deflated DICOM 10 x 8000^2 (review)", "largest accepted PNG 8000 x 5000",
                         "largest accepted RGBA PNG 8000 x 5000", "16-bit DICOM 5600 x 5600 (60 MB)"):
                p, t, r = measure(APP, "-" if name.startswith("none") else str(files[name]), timeout=900)
                print(f"  {name:<40} peak {p:>5} MB  {t:>5.1f} s  {r}")
        if not a.skip_server:
            server_memory(files)
        if not a.skip_eight:
            eight_large_uploads(d)
        if not a.skip_report:
            from pneumo_core.evaluation.predictions import make_table, write_predictions

            n = 2_000_000
            rng = np.random.default_rng(0)
            y = (rng.random(n) < 0.6).astype(int)
            p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
            write_predictions(make_table([f"i{k}" for k in range(n)], y, np.stack([1 - p, p], 1),
                                         ["NORMAL", "PNEUMONIA"], task="binary"), d / "big.parquet")
            pk, t, r = measure(REPORT, str(d / "big.parquet"), timeout=3600)
            print(f"\nreport --bootstrap 200 on {n:,} rows: peak {pk} MB, {t:.0f} s ({r})")


if __name__ == "__main__":
    main()
