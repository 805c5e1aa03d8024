"""Files we write: cells and names safe for spreadsheets and Markdown, atomic writes."""
from __future__ import annotations

import os
import time
from pathlib import Path

from pneumo_core.files import atomic_write, clean_stale_temps, escape_markdown, safe_cell, safe_filename


def test_safe_cells_file_names_and_markdown():
    assert safe_cell('=HYPERLINK("http://x","click")') == '\'=HYPERLINK("http://x","click")'
    assert [safe_cell(v) for v in ("+1", "-1", "@SUM(A1)", "ok.png", 0.5)] == ["'+1", "'-1", "'@SUM(A1)", "ok.png", 0.5]
    name = safe_filename('=HYPERLINK("http://evil/x","y")')
    assert name and not name.startswith(("=", "+", "-", "@", ".")) and "/" not in name and '"' not in name
    assert safe_filename("../../etc/passwd") == "passwd" and safe_filename("...") == "image"
    assert escape_markdown("![x](http://evil/t.png)") == r"\!\[x\]\(http\://evil/t\.png\)"


def test_atomic_write_respects_the_umask_and_cleans_what_a_killed_writer_left(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.txt", lambda t: Path(t).write_text("a"))
        os.umask(0o077)
        atomic_write(tmp_path / "b.txt", lambda t: Path(t).write_text("b"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
    stale, fresh = tmp_path / ".a.txt.x1.tmp", tmp_path / ".a.txt.x2.tmp"
    stale.write_text("left by kill -9")
    fresh.write_text("a writer still at work")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    atomic_write(tmp_path / "a.txt", lambda t: Path(t).write_text("again"))
    assert not stale.exists() and fresh.exists()
    assert clean_stale_temps(tmp_path / "a.txt", max_age_s=-1) == [fresh]
