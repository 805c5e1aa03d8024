#!/usr/bin/env python
"""A class on one server (issue 25): N real headless Chromium sessions at once against `streamlit run app.py`
(``--workers 0``) or `python -m pneumo_core serve --workers W`, bundled models, no dataset folder.

    python -m bench.class_bench [--sessions 1 5 10] [--workers 0 1 2]

Half the sessions press "Try a sample" (each then steps to its own sample), half upload their own test X-ray.
Per configuration it prints: cold start (launch -> a browser shows the page); a first "Try a sample" asked 10 s
after launch (click -> verdicts and heatmap); the warm-up's CPU; p50 / p95 of the first image (page opened -> the
verdicts and the heatmap on screen), a tweak (one opacity step -> the new overlay) and Compare (page opened -> both
overlays); the server's CPU-s per action (all its processes, decoders included, from /proc), for one sample click
alone and for one upload alone; the servers' resident memory at start, at peak and 60 s after the sessions close;
exceptions; whether each session saw its own image name and a heatmap of the class the best model predicts for that
image (computed here, without the app). Each session runs in its own thread and its own browser; with 2 cores the
browsers share them with the server, so first-image times include the browsers' own start.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser_utils import ROOT, body_text, chrome, free_port, wait_idle, widget

SAMPLES = sorted((ROOT / "assets" / "examples").glob("*.jpeg"),  # in the order "Try a sample" steps through them
                 key=lambda p: ("virus" not in p.name, "bacteria" not in p.name, p.name))
DATA = ROOT.parent / "shared" / "data" / "chest_xray" / "test"
ERROR_BOX = "This app has encountered an error"


# ---------------------------------------------------------------- the server's processes, from /proc

def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and every process under it."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def cpu_seconds(pids: list[int]) -> float:
    tick = 100.0
    total = 0.0
    for p in pids:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / tick  # self and waited-for children
        except (OSError, IndexError):
            pass
    return total


def machine_busy_seconds() -> float:
    """CPU-s the whole machine spent busy (every process: the server, the browsers, this bench), /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(f) - f[3] - f[4]) / 100.0  # all but idle and iowait


def rss_mb(pids: list[int], field: str = "VmRSS") -> float:
    """Resident memory of ``pids`` summed (``RssAnon``: without the libraries' file pages, which processes
    mapping the same files share; ``Pss``: each shared page divided among the processes sharing it, so the sum
    is what the server takes when its workers share pages, e.g. forked by ``serve``)."""
    total = 0
    for p in pids:
        status = f"/proc/{p}/smaps_rollup" if field == "Pss" else f"/proc/{p}/status"
        try:
            total += int(next(ln.split()[1] for ln in Path(status).read_text().splitlines()
                              if ln.startswith(field + ":")))
        except (OSError, StopIteration):
            pass
    return total / 1024


class Server:
    """`streamlit run app.py` (workers 0) or `serve --workers W`; warm-up asked at launch either way."""

    def __init__(self, workers: int) -> None:
        self.port = free_port()
        self.t0 = time.perf_counter()
        if workers == 0:
            cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                   "--server.port", str(self.port), "--server.address", "127.0.0.1",
                   "--server.scriptHealthCheckEnabled", "true"]
        else:
            cmd = [sys.executable, "-m", "pneumo_core", "serve", "--workers", str(workers), "--port", str(self.port),
                   "--address", "127.0.0.1"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.took_over: float | None = None  # serve's workers took over from its greeter (s after launch)
        self.handed = threading.Event()
        if workers < 2:
            self.handed.set()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"
        while True:
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                if self.proc.poll() is not None or time.perf_counter() - self.t0 > 180:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)
        if workers == 0:  # serve does this itself for each worker
            urllib.request.urlopen(f"{self.url}/_stcore/script-health-check", timeout=60).read()
        self.ready = time.perf_counter() - self.t0

    def _read(self) -> None:
        for line in self.proc.stdout:
            if "took over from the greeter" in line:
                self.took_over = time.perf_counter() - self.t0
                self.handed.set()
        self.handed.set()

    def pids(self) -> list[int]:
        return tree(self.proc.pid)

    def settle(self, quiet: float = 3.0, limit: float = 180.0) -> float:
        """Wait until the server's processes use no CPU for ``quiet`` s (the warm-up done); its CPU-s."""
        t0, start = time.perf_counter(), cpu_seconds(self.pids())
        last, since = start, time.perf_counter()
        while time.perf_counter() - t0 < limit:
            time.sleep(0.5)
            now = cpu_seconds(self.pids())
            if now - last > 0.05:
                last, since = now, time.perf_counter()
            elif time.perf_counter() - since >= quiet:
                break
        return last - start

    def stop(self) -> None:
        self.proc.send_signal(2)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------- one visitor

def overlay_srcs(driver) -> list[str]:
    try:
        imgs = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')
        return [i.get_attribute("src") or "" for i in imgs]
    except Exception:  # noqa: BLE001 - the page swapped them
        return []


def heat_caption(text: str) -> str:
    return next((ln for ln in text.splitlines() if " for " in ln and " px" in ln), "")


def visit(url: str, i: int, out: dict, start: threading.Barrier) -> None:
    """Session ``i``: first image, one tweak, Compare. Even sessions use samples, odd ones upload."""
    rec: dict = {"errors": 0}
    driver = chrome(1400, 1400)
    try:
        start.wait()
        t0 = time.perf_counter()
        driver.get(f"{url}/predict")
        WebDriverWait(driver, 300, 0.05).until(lambda d: "Try a sample" in body_text(d))
        if i % 2 == 0:
            steps = (i // 2) % len(SAMPLES) + 1  # this session's own sample
            for _ in range(steps):
                driver.find_element(By.XPATH, '//button[.//p[text()="Try a sample"]]').click()
                wait_idle(driver, timeout=600)
            name = SAMPLES[steps - 1].name
        else:
            img = sorted((DATA / ("NORMAL" if i % 4 == 1 else "PNEUMONIA")).glob("*.jpeg"))[i // 4]
            driver.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(img))
            name = img.name
        WebDriverWait(driver, 600, 0.05).until(lambda d: "OOD score" in (t := body_text(d)) and " px" in t)
        rec["first_image"] = time.perf_counter() - t0
        wait_idle(driver, timeout=600)
        text = body_text(driver)
        rec["name"], rec["own_name"], rec["caption"] = name, name in text, heat_caption(text)
        before = overlay_srcs(driver)[-1:]
        thumb = widget(driver, "stSlider", "Opacity").find_element(By.CSS_SELECTOR, 'input[type="range"]')
        driver.execute_script("arguments[0].focus()", thumb)
        t1 = time.perf_counter()
        ActionChains(driver).send_keys(Keys.ARROW_RIGHT).perform()
        WebDriverWait(driver, 300, 0.02).until(lambda d: overlay_srcs(d)[-1:] not in (before, []))
        rec["tweak"] = time.perf_counter() - t1
        wait_idle(driver, timeout=600)
        t2 = time.perf_counter()
        driver.get(f"{url}/compare")
        WebDriverWait(driver, 600, 0.05).until(lambda d: len(overlay_srcs(d)) >= 2)
        rec["compare"] = time.perf_counter() - t2
        wait_idle(driver, timeout=600)
        rec["errors"] = body_text(driver).count(ERROR_BOX) + text.count(ERROR_BOX)
    except Exception as exc:  # noqa: BLE001 - a failed session is reported, not fatal for the bench
        rec["failed"] = f"{type(exc).__name__}: {str(exc)[:120]}"
    finally:
        driver.quit()
        out[i] = rec


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))] if v else float("nan")


def expected_classes() -> dict[str, str]:
    """Image name -> the class the best binary model's Grad-CAM explains (its predicted class), computed here
    without the app: what every session must see, however many share the server."""
    import numpy as np

    from pneumo_core.data.images import load_grayscale
    from pneumo_core.evaluation import selection
    from pneumo_core.files import ASSETS
    from pneumo_core.inference.predictors import Predictor
    from pneumo_core.models.sources import bundled_source

    best = selection.best_model(ASSETS, "binary", with_checkpoint=True)
    model = Predictor(bundled_source().load(best.key))
    paths = SAMPLES + [p for c in ("NORMAL", "PNEUMONIA") for p in sorted((DATA / c).glob("*.jpeg"))[:3]]
    probs = model.predict_grays([load_grayscale(p) for p in paths])
    return {p.name: model.classes[int(np.argmax(q))] for p, q in zip(paths, probs)}


def run(workers: int, sessions: int, expected: dict[str, str]) -> None:
    server = Server(workers)
    cold = None
    try:
        probe = chrome(1400, 1000)
        t0 = time.perf_counter()
        probe.get(f"{server.url}/predict")
        WebDriverWait(probe, 300, 0.05).until(lambda d: "Try a sample" in body_text(d))
        cold = server.ready + (time.perf_counter() - t0)
        # the first visitor's sample, asked 10 s after launch (the warm-up may still be running); with serve's
        # greeter still answering then, once the workers have taken over and the page is drawn again
        time.sleep(max(0.0, 10 - (time.perf_counter() - server.t0)))
        if not server.handed.is_set():
            server.handed.wait(180)
            time.sleep(1.0)
            WebDriverWait(probe, 300, 0.05).until(lambda d: "Try a sample" in body_text(d))
            wait_idle(probe, timeout=300, settle=1.0)
        asked = time.perf_counter() - server.t0
        t1 = time.perf_counter()
        probe.find_element(By.XPATH, '//button[.//p[text()="Try a sample"]]').click()
        WebDriverWait(probe, 300, 0.05).until(lambda d: "OOD score" in (t := body_text(d)) and " px" in t)
        first_sample = time.perf_counter() - t1
        wait_idle(probe, timeout=300, settle=1.0)
        warm_cpu = server.settle()
        # one sample click alone, warm (the next sample): the server's CPU for it
        c0 = cpu_seconds(server.pids())
        probe.find_element(By.XPATH, '//button[.//p[text()="Try a sample"]]').click()
        WebDriverWait(probe, 300, 0.05).until(lambda d: "OOD score" in body_text(d))
        wait_idle(probe, timeout=300, settle=1.0)
        click_cpu = cpu_seconds(server.pids()) - c0
        # one upload alone (a test X-ray no sample is): decoding in the worker, every model, the OOD gate, Grad-CAM
        upload = sorted((DATA / "PNEUMONIA").glob("*.jpeg"))[-1]
        c0 = cpu_seconds(server.pids())
        probe.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(upload))
        WebDriverWait(probe, 300, 0.05).until(lambda d: upload.name in (t := body_text(d)) and "OOD score" in t)
        wait_idle(probe, timeout=300, settle=1.0)
        upload_cpu = cpu_seconds(server.pids()) - c0
        probe.quit()
        base, base_anon, base_pss = (rss_mb(server.pids(), f) for f in ("VmRSS", "RssAnon", "Pss"))
        peak = [base]
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.5):
                peak.append(rss_mb(server.pids()))

        threading.Thread(target=watch, daemon=True).start()
        out: dict[int, dict] = {}
        barrier = threading.Barrier(sessions)
        c1, m1, w1 = cpu_seconds(server.pids()), machine_busy_seconds(), time.perf_counter()
        threads = [threading.Thread(target=visit, args=(server.url, i, out, barrier)) for i in range(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        used = cpu_seconds(server.pids()) - c1
        busy, wall = machine_busy_seconds() - m1, time.perf_counter() - w1
        stop.set()
        time.sleep(60)
        after, after_anon, after_pss = (rss_mb(server.pids(), f) for f in ("VmRSS", "RssAnon", "Pss"))
        ok = [r for r in out.values() if "failed" not in r]
        same = sum(f" for {expected.get(r['name'], '?')} " in r["caption"] for r in ok)
        actions = 3 * len(ok) + sum((i // 2) % len(SAMPLES) for i in out if i % 2 == 0)  # extra sample steps
        label = "streamlit run app.py" if workers == 0 else f"serve --workers {workers}"

        def p50_p95(key: str, fmt: str = "4.1f") -> str:
            v = [r[key] for r in ok]
            return f"p50 {pct(v, .5):{fmt}} p95 {pct(v, .95):{fmt}}"

        over = "" if server.took_over is None else f", workers took over at {server.took_over:.1f} s"
        print(f"{label:<22} N={sessions:<3} cold {cold:4.1f} s{over}, a sample asked at {asked:.0f} s "
              f"{first_sample:.1f} s | first image "
              f"{p50_p95('first_image')} | tweak "
              f"{p50_p95('tweak', '4.2f')} | Compare {p50_p95('compare')} s | server CPU {used / max(1, actions):.2f} "
              f"s/action, one warm sample click {click_cpu:.2f} s, one upload {upload_cpu:.2f} s, warm-up "
              f"{warm_cpu:.0f} s | RSS {base:.0f} -> peak "
              f"{max(peak):.0f} -> {after:.0f} MB 60 s after (anonymous {base_anon:.0f} -> {after_anon:.0f}, "
              f"proportional {base_pss:.0f} -> {after_pss:.0f}) | "
              f"exceptions {sum(r['errors'] for r in ok)}, failed {sessions - len(ok)}, own image "
              f"{sum(r['own_name'] for r in ok)}/{len(ok)}, heatmap of its own verdict {same}/{len(ok)} | during the "
              f"sessions ({wall:.0f} s) the machine was busy {busy / wall / (os.cpu_count() or 1):.0%}, the server "
              f"{used / max(busy, 1e-9):.0%} of that CPU (the browsers and the bench the rest)", flush=True)
        for i, r in sorted(out.items()):
            if "failed" in r:
                print(f"  session {i} failed: {r['failed']}")
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="0: streamlit run app.py; W: serve")
    a = ap.parse_args()
    expected = expected_classes()
    for w in a.workers:
        for n in a.sessions:
            run(w, n, expected)


if __name__ == "__main__":
    main()
