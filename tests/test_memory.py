"""pneumo_core/serving/memory: freed heap memory handed back, libraries warmed up and frozen once, page runs and
warm-up imports taking turns, sessions closed with their browser."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


FRAGMENTED = """
import sys
from pneumo_core.serving.memory import give_back_freed_memory
def rss():
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS"))) // 1024
keep, big = [], []
for i in range(3000):  # 100 KB blocks (on the heap, under the mmap threshold) pinned by small ones after them
    big.append(bytes(100_000))
    keep.append(bytes(600))
before = rss()
del big
freed = rss()
give_back_freed_memory()
print(before, freed, rss())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or sys.platform != "linux", reason="glibc / procfs only")
def test_freed_heap_memory_goes_back_to_the_system():
    """What a decoded 40-MP upload leaves behind: freed blocks the heap cannot shrink past stay in the process
    until ``malloc_trim`` hands their pages back."""
    out = subprocess.run([sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, cwd=ROOT, check=True)
    before, freed, after = map(int, out.stdout.split())
    assert before > 200 and before - freed < 50  # free() alone kept it all
    assert freed - after > 150, (before, freed, after)


FREEZE = """
import gc, sys
from pneumo_core.serving.memory import warm_up
print(warm_up(("pandas",)) is None)  # no running server (a plain import, AppTest): nothing to warm up
thread = warm_up(("pandas",), delay=0, server_only=False)  # a library: ~10^5 objects to scan after every run
thread.join(120)
print(not thread.is_alive(), "pandas" in sys.modules, gc.get_freeze_count(),
      warm_up(server_only=False) is thread)
"""


def test_libraries_are_imported_and_frozen_once_in_the_background():
    """What keeps Streamlit's full collection after each run (runner.postScriptGC) from scanning the libraries:
    imported and frozen once per process, in a thread of its own."""
    out = subprocess.run([sys.executable, "-c", FREEZE], capture_output=True, text=True, cwd=ROOT, check=True)
    outside, done, imported, frozen, same_thread = out.stdout.split()
    assert outside == done == imported == same_thread == "True" and int(frozen) > 50_000


def test_page_runs_and_warm_up_imports_take_turns():
    """An import of the warm-up thread waits for the page runs under way, and a page run for the import.
    Ordered by events, not by sleeping: each thread holds the gate until the test lets it go."""
    import threading

    from pneumo_core.serving.memory import _Gate

    gate, events = _Gate(), []
    entered = {name: threading.Event() for name in ("run", "import")}
    release = {name: threading.Event() for name in ("run", "import")}

    def hold(ctx, name):
        with ctx():
            events.append(f"{name} in")
            if name in entered:
                entered[name].set()
                assert release[name].wait(10)
            events.append(f"{name} out")

    def start(ctx, name) -> threading.Thread:
        t = threading.Thread(target=hold, args=(ctx, name), daemon=True)
        t.start()
        return t

    threads = [start(gate.run, "run")]
    assert entered["run"].wait(10)
    threads.append(start(gate.importing, "import"))
    deadline = time.monotonic() + 10
    while not gate._importing:  # the import is waiting for the run: no new run may start from here
        assert time.monotonic() < deadline, "the import never asked for the gate"
        time.sleep(0.001)
    threads.append(start(gate.run, "late run"))
    assert events == ["run in"]
    release["run"].set()
    assert entered["import"].wait(10)
    assert events == ["run in", "run out", "import in"]  # the late run waits for the import
    release["import"].set()
    for t in threads:
        t.join(10)
    assert events == ["run in", "run out", "import in", "import out", "late run in", "late run out"]


def test_background_work_gives_way_to_a_page_run_under_way():
    """give_way waits while a visitor's page run is under way (up to its timeout, then goes on) and returns as soon
    as the run ends, so the warm-up's next step never competes with a visitor for the core."""
    import threading

    from pneumo_core.serving.memory import _Gate

    gate = _Gate()
    assert gate.quiet(0.0)  # nobody running: no wait
    entered, release = threading.Event(), threading.Event()

    def visitor():
        with gate.run():
            entered.set()
            assert release.wait(10)

    t = threading.Thread(target=visitor, daemon=True)
    t.start()
    assert entered.wait(10)
    t0 = time.monotonic()
    assert not gate.quiet(0.2)  # the run is still under way: timed out, not returned at once
    assert time.monotonic() - t0 >= 0.19
    threading.Timer(0.1, release.set).start()
    t0 = time.monotonic()
    assert gate.quiet(10)  # returns when the run ends, long before the timeout
    assert time.monotonic() - t0 < 5
    t.join(10)


def test_sessions_with_uploads_can_be_closed_with_their_browser():
    """pneumo_core.serving.memory.close_with_browser relies on this public Runtime method: a session marked
    non-resumable is shut down (its uploads freed) when its browser disconnects."""
    from streamlit.runtime import Runtime

    assert callable(getattr(Runtime, "mark_session_nonresumable", None))


PASSIVE = """
import os, sys
from pneumo_core.serving.memory import passive_threads
first = passive_threads()
policy = os.environ.get("OMP_WAIT_POLICY")
import torch
os.environ.pop("OMP_WAIT_POLICY")
print(first, policy, passive_threads(), "OMP_WAIT_POLICY" in os.environ)
"""


def test_torch_threads_are_told_to_sleep_only_before_torch_loads():
    """OpenMP reads OMP_WAIT_POLICY once, when torch loads it: set before, never claimed afterwards."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", PASSIVE], capture_output=True, text=True, cwd=ROOT, check=True, env=env)
    assert out.stdout.split() == ["True", "PASSIVE", "False", "False"]


def test_the_greeter_runs_no_warm_up(monkeypatch):
    """serve's greeter (PNEUMO_WARM_UP=0) answers the first seconds' pages and then stops: no imports, no models."""
    from pages._shared import warmup

    monkeypatch.setenv("PNEUMO_WARM_UP", "0")
    monkeypatch.setattr(warmup, "_STARTED", False)
    assert warmup.start(server_only=False) is False and warmup._STARTED is False
