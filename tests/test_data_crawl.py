"""data_tools.crawl: icrawler's real crawlers against a search engine and image host on 127.0.0.1.

The server (tests/search_server.py) answers icrawler's own feeders in the
formats its parsers read; the fault matrix runs on its ``/fault/`` paths.
"""

import hashlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from search_server import FAULTS, SearchServer, jpeg_bytes, png_bytes

from bagnet_keras.core.commit import LOCK_FILE, FolderBusyError, folder_lock, read_lines
from data_tools.cli import main as data_tools_main
from data_tools.crawl import CRAWL_LOG, crawl, load_classes
from data_tools.images import load_clean
from data_tools.manifest import read_manifest

FAST = dict(timeout=1.0, deadline=2.0, retries=1, backoff=0.01, threads=4, progress=False)


@pytest.fixture
def server():
    s = SearchServer()
    yield s
    s.close()


def _serve_class(server, query, first_seed, count, extra=()):
    """``count`` distinct JPEGs as the results of ``query``, after ``extra`` result URLs."""
    for k in range(first_seed, first_seed + count):
        server.images[f"{k}.jpg"] = jpeg_bytes(k)
    server.results[query] = list(extra) + [f"/img/{k}.jpg" for k in range(first_seed, first_seed + count)]


def _files(root):
    """Every file under ``root`` (relative, with /), except the crawl's own bookkeeping."""
    found = set()
    for folder, _, names in os.walk(root):
        for name in names:
            found.add(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return found - {"manifest.jsonl", CRAWL_LOG, LOCK_FILE}


def _check_consistent(root, labels, n):
    """Exactly n valid, distinct images per class, each with a manifest record that matches it."""
    files = _files(root)
    records = {k: r for k, r in read_manifest(str(root)).items() if r["status"] == "ok"}
    assert files == set(records), files ^ set(records)
    shas = set()
    for rel, record in records.items():
        data = (root / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
        image = load_clean(str(root / rel), crop_borders=False)
        assert (record["width"], record["height"]) == image.original_size
        shas.add(record["sha256"])
    assert len(shas) == len(records)
    for label in labels:
        assert sum(r["class"] == label for r in records.values()) == n, label
    return records


def test_bing_crawl_fills_every_class_with_recorded_files(server, tmp_path):
    root = tmp_path / "data"
    server.images["wide.png"] = png_bytes(500)
    _serve_class(server, "Paris street photo", 0, 6, extra=["/img/wide.png"])
    # Rome's results repeat a Paris image (same bytes): it must not be kept twice.
    _serve_class(server, "Rome street photo", 10, 6, extra=["/img/0.jpg"])
    report = crawl(root, ["Paris", "Rome"], 5, queries=["{label} street photo"], endpoint=server.url, **FAST)

    assert report.counts == {"Paris": 5, "Rome": 5} and report.downloaded == 10 and not report.short
    records = _check_consistent(root, ["Paris", "Rome"], 5)
    for record in records.values():
        assert record["engine"] == "bing" and record["query"] == f"{record['class']} street photo"
        assert record["url"].startswith(server.url + "/img/") and record["page"].startswith("https://page.example/")
        assert record["crawled"] and record["format"] in ("JPEG", "PNG")
    names = sorted(r["path"] for r in records.values() if r["class"] == "Paris")
    assert [os.path.splitext(n)[0] for n in names] == [f"Paris/{k:06d}" for k in range(1, 6)]
    # icrawler's own Bing parser keeps only .jpg URLs; ours keeps the PNG result too, named by its format.
    png = [r for r in records.values() if r["url"].endswith("wide.png")]
    assert len(png) == 1 and png[0]["path"].endswith(".png") and png[0]["format"] == "PNG"
    assert not any(r["class"] == "Rome" and r["url"].endswith("/img/0.jpg") for r in records.values())
    # icrawler's feeder made the search requests, in Bing's format, with its browser headers.
    searches = [p for p in server.requests if p.startswith("/images/async")]
    assert "/images/async?q=Paris+street+photo&first=0" in searches
    assert all("Mozilla" in h.get("User-Agent", "") for h in server.headers)
    # and every icrawler thread has ended
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("feeder-", "parser-", "downloader-"))]


def test_rerun_downloads_nothing_and_tops_up_after_removal(server, tmp_path):
    root = tmp_path / "data"
    _serve_class(server, "Oslo", 0, 8)
    crawl(root, ["Oslo"], 4, endpoint=server.url, **FAST)
    images_asked = [p for p in server.requests if p.startswith("/img/")]

    report = crawl(root, ["Oslo"], 4, endpoint=server.url, **FAST)
    assert report.downloaded == 0 and [p for p in server.requests if p.startswith("/img/")] == images_asked

    # A file removed (by hand, or quarantined by clean) is replaced by a new download, under a new name.
    kept_urls = {r["url"].removeprefix(server.url) for r in read_manifest(str(root)).values()}
    removed = sorted(_files(root))[0]
    os.remove(root / removed)
    before = len(server.requests)  # every request, searches included
    report = crawl(root, ["Oslo"], 4, endpoint=server.url, **FAST)
    assert report.downloaded == 1
    records = _check_consistent(root, ["Oslo"], 4)
    assert "Oslo/000005.jpg" in records and read_manifest(str(root))[removed]["status"] == "missing"
    # Only URLs not kept before are fetched again (some were fetched but not kept once the class was full).
    assert not kept_urls & {p for p in server.requests[before:] if p.startswith("/img/")}


def test_class_short_of_results_is_reported(server, tmp_path):
    _serve_class(server, "Tiny", 0, 2)
    report = crawl(tmp_path, ["Tiny"], 5, endpoint=server.url, **FAST)
    assert report.counts == {"Tiny": 2} and report.short == {"Tiny": 3}


@pytest.mark.parametrize("engine", ["bing", "urls"])
def test_urls_the_downloaders_left_in_their_queue_are_tried_in_another_pass(server, tmp_path, monkeypatch, engine):
    """icrawler's downloader threads stop when their queue stays empty for a moment, as on a busy machine:
    here each stops after one URL. The URLs the parser queued after them are tried, not lost as tried."""
    from data_tools import engines

    def one_url_then_stop(self, max_num, default_ext="", queue_timeout=5, req_timeout=5, **kwargs):
        self.max_num = max_num
        while not self.signal.get("reach_max_num"):
            try:
                task = self.in_queue.get(timeout=0.1)
            except queue.Empty:
                if self.signal.get("parser_exited"):
                    return
                continue
            self.download(task, default_ext, req_timeout, **kwargs)
            self.process_meta(task)
            self.in_queue.task_done()
            return

    monkeypatch.setattr(engines._Downloader, "worker_exec", one_url_then_stop)
    _serve_class(server, "Paris", 0, 4)
    classes = ["Paris"]
    if engine == "urls":
        (tmp_path / "paris.txt").write_text("".join(f"{server.url}/img/{k}.jpg\n" for k in range(4)))
        classes = {"Paris": str(tmp_path / "paris.txt")}
    report = crawl(tmp_path / "data", classes, 4, engine=engine, endpoint=server.url, **{**FAST, "threads": 1})
    assert report.counts == {"Paris": 4} and not report.short and not report.failures
    _check_consistent(tmp_path / "data", ["Paris"], 4)


def test_an_image_the_decoder_fails_on_otherwise_is_logged_once(server, tmp_path, monkeypatch):
    """Pillow raises more than OSError and ValueError on some corrupt files (an IndexError here): the URL is
    recorded as unreadable, fetched once, and the downloader thread goes on to the next."""
    from data_tools import crawl as crawl_module

    bad = jpeg_bytes(2)
    load_clean = crawl_module.load_clean

    def decoder_bug(source, **kwargs):
        if source.getvalue() == bad:
            raise IndexError("tile cannot extend outside image")
        return load_clean(source, **kwargs)

    monkeypatch.setattr(crawl_module, "load_clean", decoder_bug)
    _serve_class(server, "Paris", 0, 5)
    report = crawl(tmp_path / "data", ["Paris"], 4, endpoint=server.url, **{**FAST, "threads": 1})
    assert report.counts == {"Paris": 4} and report.failures == {"unreadable": 1}
    assert server.requests.count("/img/2.jpg") == 1
    (entry,) = read_lines(str(tmp_path / "data" / CRAWL_LOG))
    assert entry["url"].endswith("/img/2.jpg") and entry["reason"].startswith("unreadable: IndexError")


# -- the fault matrix: one crawl over every fault, then one test per fault


@pytest.fixture(scope="module")
def fault_crawl(tmp_path_factory):
    server = SearchServer(timeout_sleep=3.0)
    base = tmp_path_factory.mktemp("faults")
    root = base / "data"
    server.images["escape.jpg"] = jpeg_bytes(777)
    server.images["escape2.jpg"] = jpeg_bytes(778)
    faults = {f: f"{server.url}/fault/{f}.jpg" for f in FAULTS}
    faults["non-http"] = "ftp://127.0.0.1/pub/x.jpg"
    faults["file-url"] = "file:///etc/passwd.jpg"
    faults["traversal"] = f"{server.url}/img/../../escape.jpg"
    faults["encoded-traversal"] = f"{server.url}/img/..%2F..%2Fescape2.jpg"
    _serve_class(server, "faults", 0, 4, extra=list(faults.values()))
    start = time.monotonic()
    report = crawl(root, ["faults"], 6, endpoint=server.url, **FAST)
    elapsed = time.monotonic() - start
    server.close()
    log = {entry["url"]: entry["reason"] for entry in read_lines(str(root / CRAWL_LOG))}
    yield dict(root=root, base=base, report=report, faults=faults, log=log, elapsed=elapsed, requests=server.requests)


EXPECTED = {
    "404": "HTTP 404",
    "500": "HTTP 500",
    "reset": "broken connection",
    "timeout": "timeout",
    "trickle": "too slow",
    "truncated-body": "broken connection",
    "truncated-image": "truncated or corrupt",
    "html": "not an image",
    "bomb": "decompression bomb",
    "redirect-loop": "redirect loop",
    "non-http": "unsupported URL",
    "file-url": "unsupported URL",
}


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_fault_is_recorded_and_leaves_no_file(fault_crawl, fault):
    url = fault_crawl["faults"][fault]
    assert fault_crawl["log"][url].startswith(EXPECTED[fault]), fault_crawl["log"][url]
    records = read_manifest(str(fault_crawl["root"]))
    assert not any(r.get("url") == url for r in records.values())


def test_fault_crawl_finishes_with_only_valid_files_inside_its_folder(fault_crawl):
    root, base = fault_crawl["root"], fault_crawl["base"]
    # Four good images and the two served behind traversal-looking URLs: all six slots filled.
    _check_consistent(root, ["faults"], 6)
    assert os.listdir(base) == ["data"], "something was written beside the output folder"
    assert not any(name.startswith(".") and name.endswith(".part") for name in os.listdir(root / "faults"))
    print(f"\nfault crawl: {fault_crawl['elapsed']:.1f} s, failures {dict(fault_crawl['report'].failures)}")


@pytest.mark.parametrize("fault", ["traversal", "encoded-traversal"])
def test_traversal_urls_are_named_by_the_crawler(fault_crawl, fault):
    records = read_manifest(str(fault_crawl["root"]))
    (record,) = [r for r in records.values() if r.get("url") == fault_crawl["faults"][fault]]
    assert record["path"].startswith("faults/") and os.path.basename(record["path"])[:6].isdigit()


def test_retries_with_backoff_on_server_errors(fault_crawl):
    # retries=1: the 500 is asked twice, the 404 once.
    assert fault_crawl["requests"].count("/fault/500.jpg") == 2
    assert fault_crawl["requests"].count("/fault/404.jpg") == 1


# -- resume after SIGKILL


def test_sigkill_midway_then_rerun_gives_exactly_n_per_class(tmp_path):
    server = SearchServer(delay=0.15)
    try:
        _serve_class(server, "Lima street", 0, 14)
        _serve_class(server, "Kyiv street", 20, 14)
        root = tmp_path / "data"
        command = [
            sys.executable,
            "-m",
            "data_tools",
            "crawl",
            str(root),
            "--labels",
            "Lima",
            "Kyiv",
            "-n",
            "8",
            "--query",
            "{label} street",
            "--endpoint",
            server.url,
            "--timeout",
            "2",
            "--threads",
            "3",
            "--quiet",
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        manifest = root / "manifest.jsonl"
        stop = time.monotonic() + 60
        while time.monotonic() < stop and process.poll() is None:
            if manifest.exists() and manifest.read_text().count("\n") >= 3:
                break
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_with = len(read_manifest(str(root)))
        assert 3 <= killed_with < 16

        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "Lima: 8 images" in result.stdout and "Kyiv: 8 images" in result.stdout
        records = _check_consistent(root, ["Lima", "Kyiv"], 8)
        urls = [r["url"] for r in records.values()]
        assert len(urls) == len(set(urls))
        assert not [n for label in ("Lima", "Kyiv") for n in os.listdir(root / label) if n.startswith(".")]
    finally:
        server.close()


# -- other engines, through icrawler's own feeders and parsers


def test_baidu_engine(server, tmp_path):
    _serve_class(server, "Cairo", 0, 4)
    report = crawl(tmp_path, ["Cairo"], 3, engine="baidu", endpoint=server.url, **FAST)
    assert report.counts == {"Cairo": 3}
    assert any(p.startswith("/search/acjson?tn=resultjson_com") and "word=Cairo" in p for p in server.requests)
    assert {r["engine"] for r in read_manifest(str(tmp_path)).values()} == {"baidu"}


def test_flickr_engine_reads_its_key_from_the_environment(server, tmp_path, monkeypatch):
    _serve_class(server, "Quito", 0, 4)
    monkeypatch.delenv("FLICKR_APIKEY", raising=False)
    with pytest.raises(ValueError, match="FLICKR_APIKEY"):
        crawl(tmp_path, ["Quito"], 2, engine="flickr", endpoint=server.url, **FAST)
    monkeypatch.setenv("FLICKR_APIKEY", "test-key")
    report = crawl(tmp_path, ["Quito"], 2, engine="flickr", endpoint=server.url, **FAST)
    assert report.counts == {"Quito": 2}
    assert any("method=flickr.photos.search" in p and "api_key=test-key" in p for p in server.requests)


def test_url_list_engine_with_a_file_of_urls(server, tmp_path):
    _serve_class(server, "unused", 0, 3)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "a.txt").write_text(
        "# my own photos\n" + "".join(f"{server.url}/img/{k}.jpg\n" for k in range(3)) + f"{server.url}/missing.jpg\n"
    )
    (lists / "classes.json").write_text(json.dumps({"mine": "a.txt"}))
    root = tmp_path / "data"
    report = crawl(root, str(lists / "classes.json"), 5, engine="urls", **FAST)
    assert report.counts == {"mine": 3} and report.short == {"mine": 2}
    assert report.failures == {"HTTP 404": 1}
    _check_consistent(root, ["mine"], 3)


# -- arguments, configuration and logging


def test_load_classes_from_yaml_and_json(tmp_path):
    (tmp_path / "c.yaml").write_text('Paris: "{label} street photo -art"\nTokyo: ["Tokyo street", "Shibuya"]\nOslo:\n')
    assert load_classes(str(tmp_path / "c.yaml"), queries=["{label} city"]) == {
        "Paris": ["Paris street photo -art"],
        "Tokyo": ["Tokyo street", "Shibuya"],
        "Oslo": ["Oslo city"],
    }
    (tmp_path / "c.json").write_text('["Lima", "Kyiv"]')
    assert load_classes(str(tmp_path / "c.json")) == {"Lima": ["Lima"], "Kyiv": ["Kyiv"]}
    (tmp_path / "bad.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_classes(str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(classes=["../up"]), "cannot be a folder name"),
        (dict(classes=["_hidden"]), "cannot be a folder name"),
        (dict(classes={"Paris": "{city} street"}), "placeholder other than"),
        (dict(classes=[]), "empty"),
        (dict(n_per_class=0), "n_per_class"),
        (dict(engine="altavista"), "Unknown engine"),
        (dict(filters={"colour": "red"}), "Bad search filters"),
        (dict(filters={"type": "painting"}), "Bad search filters"),
        (dict(threads=0), "threads"),
        (dict(timeout=-1), "timeout"),
        (dict(classes="/nonexistent/classes.yaml"), "does not exist"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(server, tmp_path, kwargs, match):
    args = dict(root=tmp_path / "data", classes=["Paris"], n_per_class=2, endpoint=server.url, **FAST)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        crawl(**args)
    assert server.requests == [] and not (tmp_path / "data").exists()


def test_crawl_leaves_the_callers_logging_alone(server, tmp_path):
    _serve_class(server, "Bern", 0, 2)
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    crawl(tmp_path, ["Bern"], 1, endpoint=server.url, **FAST)
    assert root_logger.handlers == handlers and root_logger.level == level


def test_one_crawl_per_folder_at_a_time(server, tmp_path):
    with folder_lock(str(tmp_path), "crawl"):
        with pytest.raises(FolderBusyError, match=rf"process {os.getpid()} \('crawl'\).*lock file .*\.lock"):
            crawl(tmp_path, ["Bern"], 1, endpoint=server.url, **FAST)
    assert server.requests == []


def test_cli_crawl(server, tmp_path, capsys):
    _serve_class(server, "Rome street", 0, 3)
    argv = [
        "crawl",
        str(tmp_path),
        "--labels",
        "Rome",
        "-n",
        "2",
        "--query",
        "{label} street",
        "--filter",
        "type=photo",
        "--endpoint",
        server.url,
        "--timeout",
        "1",
        "--quiet",
    ]
    assert data_tools_main(argv) == 0
    assert "Rome: 2 images" in capsys.readouterr().out
    assert any("qft=+filterui:photo-photo" in p for p in server.requests)
    assert data_tools_main(["crawl", str(tmp_path), "--labels", "Rome", "-n", "2", "--filter", "type"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_cli_crawl_help_shows_a_complete_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        data_tools_main(["crawl", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "bagnet-keras crawl datasets/streets --labels Paris Rome Tokyo -n 400" in out and "cities.yaml" in out
