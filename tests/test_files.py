"""The one atomic write (fluxnb.files): whole files or none, kill -9 safe, private modes kept,
one temp naming that the cleaners recognise, one pid check; and the one way to draw a grid
cell that sweep grids and contact sheets share."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
import zipfile

import pytest

from fluxnb import files


def temps(folder) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


def test_write_atomic_writes_bytes_text_and_streams_and_replaces(tmp_path):
    target = tmp_path / "a.json"
    assert files.write_atomic(target, b"one") == target and target.read_bytes() == b"one"
    files.write_atomic(target, "twø")  # text: UTF-8
    assert target.read_bytes() == "twø".encode("utf-8")

    def zip_into(f):
        with zipfile.ZipFile(f, "w") as z:
            z.writestr("x/hello.txt", "hello")

    z = files.write_atomic(tmp_path / "run.zip", zip_into)
    assert zipfile.ZipFile(z).read("x/hello.txt") == b"hello"
    assert temps(tmp_path) == []


def test_write_atomic_gives_the_mode_asked_for_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        private = files.write_atomic(tmp_path / "token", "secret-value", mode=0o600)
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        os.umask(0o022)
        plain = files.write_atomic(tmp_path / "plain.txt", "x")
        assert stat.S_IMODE(plain.stat().st_mode) == 0o644
        (tmp_path / "was-open").write_text("old")
        os.chmod(tmp_path / "was-open", 0o666)
        files.write_atomic(tmp_path / "was-open", "new", mode=0o600)  # replacing keeps no old mode
        assert stat.S_IMODE((tmp_path / "was-open").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "report.ipynb"
    target.write_text("the old report")

    def half_then_fail(f):
        f.write(b"half a rep")
        raise OSError(28, "No space left on device")

    def interrupted(f):
        f.write(b"half a rep")
        raise KeyboardInterrupt

    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(target, half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(target, interrupted)
    assert target.read_text() == "the old report" and temps(tmp_path) == []


def test_kill_9_mid_write_leaves_the_old_file_and_tidy_removes_the_dead_writers_temp(tmp_path):
    target = tmp_path / "runs.csv"
    target.write_text("old,complete\n")
    code = ("import sys, time\nfrom fluxnb.files import write_atomic\n"
            "def slow(f):\n    f.write(b'new,half'); f.flush(); time.sleep(60)\n"
            f"write_atomic({str(target)!r}, slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        temp = tmp_path / f".runs.csv.{proc.pid}.tmp"
        deadline = time.monotonic() + 60
        while not (temp.is_file() and temp.stat().st_size):
            assert proc.poll() is None and time.monotonic() < deadline, "the writer never started its temp file"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert target.read_text() == "old,complete\n" and temps(tmp_path) == [temp.name]
    # A live writer's temp file (this process's) stays; the killed one's goes.
    live = files.temp_name(tmp_path / "other.png")
    live.write_bytes(b"being written")
    assert files.tidy(tmp_path) == 1 and temps(tmp_path) == [live.name]
    files.remove_temp_files(tmp_path, os.getpid())
    assert temps(tmp_path) == []


def test_two_writers_of_one_file_in_one_process_never_share_a_temp_file(tmp_path):
    target = tmp_path / "cache.json"
    both_open, seen = threading.Barrier(2, timeout=30), []

    def writer(text):
        def write(f):
            both_open.wait()  # each holds its temp file open while the other opens its own
            seen.append(temps(tmp_path))
            f.write(text.encode() * 1000)
        files.write_atomic(target, write)

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = seen[0]
    assert len(names) == 2 and all(n.endswith(f".{os.getpid()}.tmp") for n in names)
    assert target.read_text() in ("a" * 1000, "b" * 1000) and temps(tmp_path) == []


def test_tidy_knows_every_temp_name_the_write_uses(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    for n in (0, 1, 7):
        p = files.temp_name(tmp_path / "flux_1.png", n)
        p.write_bytes(b"x")
        p.rename(p.with_name(p.name.replace(f".{os.getpid()}.tmp", f".{pid}.tmp")))
    (tmp_path / ".flux_big.png.5-1.part").write_bytes(b"a resumable download: not a temp file")
    (tmp_path / "notes.tmp").write_bytes(b"not hidden: not ours")
    assert files.tidy(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".flux_big.png.5-1.part", "notes.tmp"]


def test_pid_alive_counts_the_gone_zombies_and_nonsense_as_not_running():
    assert files.pid_alive(os.getpid())
    assert not files.pid_alive(0) and not files.pid_alive(-1)  # signal 0 to those reaches a whole group
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while files.pid_alive(child.pid):  # a zombie until reaped: already gone
        assert time.monotonic() < deadline, "an exited child still counts as running"
        time.sleep(0.05)
    assert child.poll() == 0 and not files.pid_alive(child.pid)


def test_contact_sheets_and_grids_draw_a_missing_cell_the_same_way(tmp_path):
    from PIL import Image, ImageDraw

    from fluxnb.outputs import grids
    from fluxnb.runs.batch import contact

    # A grid's missing cell: the grey box; a contact sheet's: the same grey, with why in it.
    grid, boxes = grids.draw([[Image.new("RGB", (64, 64), (0, 0, 255)), None]], ["seed 1"], ["3.5", "5"], ["t"])
    x, y, w, h = boxes[0][1]
    assert grid.getpixel((x + w // 2, y + h // 2)) == grids.MISSING
    sheet = contact.render([contact.Cell(None, "P1 · seed 2", "black")], columns=1, title="batch")
    canvas = Image.new("RGB", (100, 100), "white")
    grids.paint_cell(canvas, ImageDraw.Draw(canvas), [10, 10, 80, 80], why="black", font=grids.label_font(11))
    reds = {p for p in canvas.getdata() if p[0] > 80 and p[1] < 60 and p[2] < 60}  # darkred text
    assert canvas.getpixel((85, 85)) == grids.MISSING and reds and canvas.getpixel((5, 5)) == (255, 255, 255)
    assert sheet.getpixel((6 + 200, 50 + 200)) == grids.MISSING
    assert any(p[0] > 80 and p[1] < 60 and p[2] < 60 for p in sheet.crop((6, 40, 6 + 256, 40 + 40)).getdata())
