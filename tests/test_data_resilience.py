"""A full disk and a second writer (issue 16): one clear error, nothing kept is lost, the rerun completes.

The full disk is a file-size limit (RLIMIT_FSIZE) on the command's
process: writes past it fail with EFBIG, as they fail with ENOSPC on a full
disk, and need no privileges.
"""

import hashlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image
from search_server import SearchServer, jpeg_bytes

from bagnet_keras.core.commit import LOCK_FILE, is_temporary
from data_tools.cli import main as data_tools_main
from data_tools.manifest import read_manifest
from data_tools.synthetic import scene

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(argv, file_size_limit=None, **kwargs):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "data_tools", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        preexec_fn=limit if file_size_limit else None,
        timeout=120,
        **kwargs,
    )


def _tree(root):
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


def _consistent(root):
    """Every kept record has its file with its bytes, every class file its record, no temporary file."""
    files = _tree(root)
    assert not [p for p in files if is_temporary(os.path.basename(p))]
    ok = {k: r for k, r in read_manifest(str(root)).items() if r["status"] == "ok"}
    in_classes = {p for p in files if os.sep in p and not p.startswith("_")}
    assert in_classes == set(ok)
    assert all(files[p] == r["sha256"] for p, r in ok.items())
    return ok


@pytest.fixture
def pictures():
    server = SearchServer()
    for k in range(16):
        server.images[f"{k}.jpg"] = jpeg_bytes(300 + k, 64)  # about 2.4 KB each
    yield server
    server.close()


def _crawl_argv(server, root, classes_file):
    classes_file.write_text(json.dumps({"Lima": [f"{server.url}/img/{k}.jpg" for k in range(16)]}))
    return [
        "crawl",
        str(root),
        "--engine",
        "urls",
        "--classes",
        str(classes_file),
        "-n",
        "16",
        "--threads",
        "2",
        "--timeout",
        "2",
        "--quiet",
    ]


def test_crawl_on_a_full_disk_stops_with_one_clear_error_and_the_rerun_completes(pictures, tmp_path):
    root = tmp_path / "data"
    argv = _crawl_argv(pictures, root, tmp_path / "classes.json")
    # Every picture fits, the manifest (about 450 bytes a record) does not: it fills up mid-crawl.
    full = _command(argv, file_size_limit=4000)
    assert full.returncode == 2, full.stderr
    (line,) = full.stderr.strip().splitlines()
    assert f"No space left to write into {str(root)!r}" in line and "run the same command again" in line
    kept = _consistent(root)
    assert 3 <= len(kept) < 16
    before = {p: h for p, h in _tree(root).items() if p in kept}

    again = _command(argv)
    assert again.returncode == 0, again.stderr
    final = _consistent(root)
    assert len(final) == 16 and len({r["sha256"] for r in final.values()}) == 16
    assert all(_tree(root)[p] == h for p, h in before.items()), "a picture kept before the disk filled changed"


def _clean_dataset(root):
    os.makedirs(root / "cats")
    for seed in range(6):
        Image.fromarray(scene(seed, 96)).save(root / "cats" / f"{seed:06d}.jpg", quality=90)
    buffer = io.BytesIO()
    Image.fromarray(scene(30, 96)).save(buffer, "BMP")  # to be re-encoded as a JPEG of about 4 KB
    (root / "cats" / "bitmap.bmp").write_bytes(buffer.getvalue())


def test_clean_on_a_full_disk_changes_nothing_and_the_rerun_completes(tmp_path):
    root, reference = tmp_path / "data", tmp_path / "reference"
    _clean_dataset(root)
    shutil.copytree(root, reference)
    assert data_tools_main(["clean", str(reference)]) == 0
    before = _tree(root)

    full = _command(["clean", str(root)], file_size_limit=2000)
    assert full.returncode == 2, full.stderr
    (line,) = full.stderr.strip().splitlines()
    assert f"No space left to write into {str(root)!r}" in line and "run the same command again" in line
    assert {p: h for p, h in _tree(root).items() if p != LOCK_FILE} == before, "a full disk changed the dataset"

    again = _command(["clean", str(root)])
    assert again.returncode == 0, again.stderr
    _consistent(root)
    expected = {p: h for p, h in _tree(reference).items() if p not in (LOCK_FILE, "manifest.jsonl")}
    assert {p: h for p, h in _tree(root).items() if p not in (LOCK_FILE, "manifest.jsonl")} == expected


def test_a_second_writer_is_told_who_holds_the_lock_and_a_killed_holder_never_blocks(tmp_path):
    server = SearchServer(delay=0.5)
    try:
        for k in range(16):
            server.images[f"{k}.jpg"] = jpeg_bytes(300 + k, 64)
        root = tmp_path / "data"
        argv = _crawl_argv(server, root, tmp_path / "classes.json")
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        crawl = subprocess.Popen(
            [sys.executable, "-m", "data_tools", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        lock = root / LOCK_FILE
        stop = time.monotonic() + 60
        while time.monotonic() < stop and not (lock.exists() and lock.read_text().startswith(f"{crawl.pid} ")):
            time.sleep(0.02)
        assert crawl.poll() is None, crawl.stderr.read().decode()
        for other in (argv, ["clean", str(root)], ["split", str(root)]):
            result = _command(other)
            assert result.returncode == 2
            (line,) = result.stderr.strip().splitlines()
            assert f"in use by process {crawl.pid} ('crawl')" in line and repr(str(lock)) in line, line
        crawl.send_signal(signal.SIGKILL)
        crawl.wait()
        server.delay = 0
        result = _command(argv)
        assert result.returncode == 0, result.stderr
        assert len(_consistent(root)) == 16
    finally:
        server.close()
