"""`python -m pneumo_core serve`: the generated nginx config (pure), the serving settings, and one real run:
two workers behind nginx, two separate headless Chromium browsers, each staying on its worker across reloads and
an upload, landing on different workers, and nothing left running after Ctrl-C."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from pneumo_core.cli import serve
from pneumo_core.cli.main import main
from tests.browser_utils import CHROMIUM, DRIVER, ROOT, body_text, chrome, free_port, wait_idle, widget


def _upstream_block(conf: str) -> str:
    return re.search(r"upstream pneumo_workers \{(.*?)\}", conf, re.S).group(1)


def test_warm_ups_reach_every_worker_at_once():
    """Each worker is asked to run app.py before any has answered: the asks do not wait one for another."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    both_asked = threading.Barrier(3)  # two workers' handlers and this test

    class Worker(BaseHTTPRequestHandler):
        def do_GET(self):
            both_asked.wait(timeout=30)  # broken (the test fails) if the asks came one after the other
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Worker) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        threads = serve.start_warm_ups([s.server_address[1] for s in servers], timeout=30)
        both_asked.wait(timeout=30)
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
    finally:
        for s in servers:
            s.shutdown()


def test_nginx_config_names_the_greeter(tmp_path):
    conf = serve.nginx_config(8600, [41009], tmp_path, labels=["0"])
    assert re.findall(r"server (\S+);", _upstream_block(conf)) == ["127.0.0.1:41009"]
    assert r'"~127\.0\.0\.1:41009$" 0;' in conf


def test_nginx_config_for_two_workers(tmp_path):
    conf = serve.nginx_config(8600, [41001, 41002], tmp_path, address="127.0.0.1", max_body_mb=50)
    upstream = _upstream_block(conf)
    assert re.findall(r"server (\S+);", upstream) == ["127.0.0.1:41001", "127.0.0.1:41002"]
    # sticky: the cookie, or the request id that the response then sets as the cookie
    assert "hash $pneumo_affinity consistent;" in upstream
    assert re.search(r'map \$cookie_pneumo_worker \$pneumo_affinity \{\s*"" \$request_id;', conf)
    assert re.search(r'"" "pneumo_worker=\$request_id; Path=/; HttpOnly; SameSite=Lax";', conf)
    assert "add_header Set-Cookie $pneumo_set_cookie always;" in conf
    # websocket (Streamlit's /_stcore/stream): HTTP/1.1 and the Upgrade handshake passed on, long-lived
    assert "proxy_http_version 1.1;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert "proxy_read_timeout 1d;" in conf
    assert "proxy_set_header Host $http_host;" in conf  # the websocket's origin check compares it with Origin
    assert "listen 127.0.0.1:8600;" in conf and "client_max_body_size 51m;" in conf
    # nothing outside the run folder: pid, logs and temp folders
    for path in re.findall(r"(?:pid|error_log|access_log|_temp_path) (\S+?)[ ;]", conf):
        assert path.startswith(str(tmp_path)), path
    assert r'"~127\.0\.0\.1:41002$" 2;' in conf  # X-Pneumo-Worker names the worker that answered
    assert "listen 8600;" in serve.nginx_config(8600, [41001], tmp_path)  # all interfaces by default


@pytest.mark.skipif(serve.find_nginx() is None, reason="nginx is not installed (.ci/run installs it with apt-get)")
def test_nginx_accepts_the_generated_config(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(serve.nginx_config(free_port(), [free_port(), free_port()], tmp_path, address="127.0.0.1"))
    out = subprocess.run([serve.find_nginx(), "-t", "-p", str(tmp_path), "-e", str(tmp_path / "e.log"),
                          "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_serving_settings():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none" and config["server"]["runOnSave"] is False
    assert config["server"]["maxUploadSize"] == 50 == serve.upload_limit_mb()
    assert serve.upload_limit_mb(ROOT / "no-such-config.toml") == serve.STREAMLIT_DEFAULT_UPLOAD_MB


def test_serve_without_nginx_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(serve, "find_nginx", lambda: None)
    assert main(["serve", "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "apt-get install nginx" in err


# --- the real thing ---------------------------------------------------------------------------------------------

def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (a /proc scan)."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out.update(kids)
        todo += kids
    return out


def _running(pids: set[int]) -> set[int]:
    """The ones still running (a zombie counts as gone)."""
    alive = set()
    for p in pids:
        try:
            if (Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z":
                alive.add(p)
        except OSError:
            pass
    return alive


def _rss_mb(pids: set[int]) -> float:
    total = 0
    for p in pids:
        try:
            total += int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text()).group(1))
        except (OSError, AttributeError):
            pass
    return total / 1024


def _worker_for(url: str, cookie: str | None = None) -> tuple[str, str | None]:
    """(X-Pneumo-Worker, the pneumo_worker cookie nginx set) for one request."""
    headers = {"Cookie": f"pneumo_worker={cookie}"} if cookie else {}
    req = urllib.request.Request(f"{url}/_stcore/health", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        m = re.search(r"pneumo_worker=(\w+)", " ".join(r.headers.get_all("Set-Cookie") or []))
        return r.headers["X-Pneumo-Worker"], m and m.group(1)


def _stream_lines(run_dir: Path, key: str) -> list[str]:
    return [ln for ln in (run_dir / "access.log").read_text().splitlines() if f" key={key} " in ln]


def _streams(run_dir: Path, key: str) -> int:
    """Websockets of this browser that nginx has logged (it logs one when it closes)."""
    return sum('"GET /_stcore/stream' in ln and " 101 " in ln for ln in _stream_lines(run_dir, key))


def _until(condition, timeout: float, message: str) -> None:
    """Poll ``condition`` until it holds; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@pytest.mark.skipif(not (CHROMIUM and DRIVER and serve.find_nginx()),
                    reason="needs nginx, Debian's chromium and chromium-driver (.ci/run installs them with apt-get)")
def test_serve_two_workers_in_two_browsers(virus_image):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pneumo_core", "serve", "--workers", "2", "--port", str(port),
                             "--address", "127.0.0.1"], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    drivers = []
    tree: set[int] = set()
    try:
        while not any("serve: open" in ln for ln in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.perf_counter() - t0 < 240, f"serve did not start: {''.join(lines)}"
            time.sleep(0.2)
        opened = time.perf_counter() - t0
        assert f"serve: open http://localhost:{port}/ (2 worker(s)" in "".join(lines)
        url = f"http://127.0.0.1:{port}"
        # until the workers are forked, a greeter answers (X-Pneumo-Worker 0); then the two workers, and it is gone
        early = _worker_for(url)[0]
        while not any("took over from the greeter" in ln for ln in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.perf_counter() - t0 < 240, f"the workers did not take over: {''.join(lines)}"
            time.sleep(0.2)
        started = time.perf_counter() - t0
        run_dir = Path(re.search(r"logs in (\S+)", "".join(lines)).group(1))
        tree = _descendants(proc.pid)
        assert len(tree) >= 4, tree  # 2 Streamlit workers, nginx's master and its worker
        # the greeter: the one `streamlit run` (the workers are forked from serve); the page it drew was the first
        assert not any(b"streamlit\x00run" in _cmdline(p) for p in tree), "the greeter is still running"
        said = "".join(lines)
        assert early == "0" or said.index("took over") < said.index("serve: open"), (early, said)
        rss = _rss_mb(tree)

        # a request without the cookie gets one; cookie-less requests spread over both workers
        firsts = [_worker_for(url) for _ in range(24)]
        assert {w for w, _ in firsts} == {"1", "2"} and all(c for _, c in firsts)
        # the same cookie always goes to the same worker
        for w, c in firsts[:4]:
            assert {_worker_for(url, c)[0] for _ in range(3)} == {w}

        # browser A: a fresh browser, no cookie; its first HTML request picks the worker
        a = chrome()
        drivers.append(a)
        a.get(url)
        WebDriverWait(a, 180).until(lambda d: "Models from" in body_text(d))
        key_a = a.get_cookie("pneumo_worker")["value"]
        worker_a = _worker_for(url, key_a)[0]
        # browser B (separate cookies): a cookie chosen to hash to the other worker
        key_b = next(c for w, c in firsts if w != worker_a)
        b = chrome()
        drivers.append(b)
        b.get(f"{url}/_stcore/health")
        b.add_cookie({"name": "pneumo_worker", "value": key_b, "path": "/"})
        b.get(url)
        WebDriverWait(b, 180).until(lambda d: "Models from" in body_text(d))
        pages_drawn = time.perf_counter() - t0

        # reruns: an upload (through nginx's body limit and the worker's XSRF cookie) on another page in A, a
        # widget change in B, then a reload (a new session on a new websocket) in each
        a.get(f"{url}/predict")
        upload = WebDriverWait(a, 120).until(lambda d: d.find_element(By.CSS_SELECTOR, 'input[type="file"]'))
        upload.send_keys(str(virus_image))
        WebDriverWait(a, 240).until(lambda d: "OOD score" in body_text(d) and virus_image.name in body_text(d))
        uploaded = time.perf_counter() - t0
        box = widget(b, "stTextInput", "Dataset folder (optional)").find_element(By.TAG_NAME, "input")
        box.send_keys(Keys.CONTROL, "a")  # the field starts at $PNEUMO_DATA where the server has it (CI does)
        box.send_keys(Keys.BACK_SPACE)
        box.send_keys("/no/such/folder-b", Keys.ENTER)  # a rerun in B's session, answered by its worker
        WebDriverWait(b, 120).until(lambda d: "Dataset folder not found: /no/such/folder-b" in body_text(d))
        wait_idle(b)
        for d in (a, b):  # A mid-heatmap: its session ends with the reload
            d.refresh()
            WebDriverWait(d, 180).until(lambda d: "Models from" in body_text(d))
        assert a.get_cookie("pneumo_worker")["value"] == key_a and b.get_cookie("pneumo_worker")["value"] == key_b
        for d in drivers:
            d.quit()  # closes the websockets: nginx logs them now
        drivers.clear()
        _until(lambda: all(_streams(run_dir, k) >= n for k, n in ((key_a, 3), (key_b, 2))), 15,
               "nginx did not log the closed websockets")

        seen = {}
        for key in (key_a, key_b):
            mine = _stream_lines(run_dir, key)
            assert _streams(run_dir, key) == (3 if key == key_a else 2), mine  # a websocket per page load
            assert key == key_b or any('"PUT /_stcore/upload_file' in ln and " 204 " in ln for ln in mine), mine
            workers = {re.search(r"worker=(\S+)", ln).group(1) for ln in mine}
            assert len(workers) == 1, mine  # every request of this browser on one worker
            seen[key] = workers.pop()
        print(f"\nserve open at {opened:.1f} s (answered by worker {early}), workers took over at {started:.1f} s, "
              f"both first pages at {pages_drawn:.1f} s, upload's verdicts at "
              f"{uploaded:.1f} s, sessions closed at {time.perf_counter() - t0:.1f} s; RSS of workers + nginx "
              f"after start {rss:.0f} MB, after the sessions {_rss_mb(_running(tree)):.0f} MB")
        assert seen == {key_a: worker_a, key_b: {"1": "2", "2": "1"}[worker_a]}  # different workers
        assert any('"GET / HTTP' in ln for ln in _stream_lines(run_dir, key_a))  # A's cookie-less first page

        # a worker that dies is reported (and its log kept); the other goes on serving
        tree |= _descendants(proc.pid)  # the upload decoders too, before their worker goes
        # a worker: a child of serve (forked from it) that is not nginx
        victim = next(p for p in _descendants(proc.pid) if _parent(p) == proc.pid
                      and b"nginx" not in Path(f"/proc/{p}/cmdline").read_bytes())
        os.kill(victim, signal.SIGKILL)
        deadline = time.perf_counter() + 15
        while not any("died" in ln for ln in lines) and time.perf_counter() < deadline:
            time.sleep(0.2)
        died = re.search(r"serve: worker (\d) \(127\.0\.0\.1:\d+\) died", "".join(lines))
        assert died, "".join(lines)
        assert {_worker_for(url, c)[0] for _, c in firsts} == {"1", "2"} - {died.group(1)}
    finally:
        for d in drivers:
            d.quit()
        tree |= _descendants(proc.pid)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, "".join(lines)
    assert "serve: stopped" in "".join(lines)
    _until(lambda: not _running(tree), 15, "processes of serve left running after Ctrl-C")
    out = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True)
    assert out.stdout == "", out.stdout
    assert f"serve: logs kept in {run_dir}" in "".join(lines)  # a worker died: its log stays for a look
    shutil.rmtree(run_dir)


def test_workers_share_the_cores_out():
    from pneumo_core.cli.serve import worker_threads

    assert worker_threads(1, cores=2) == 2 and worker_threads(2, cores=2) == 1 and worker_threads(4, cores=2) == 1
    assert worker_threads(2, cores=16) == 8


def test_streamlit_config_bounds_uploads_and_hides_errors():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["maxUploadSize"] <= 50
    assert cfg["client"]["showErrorDetails"] == "none"
