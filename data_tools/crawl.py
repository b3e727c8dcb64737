"""Collect images from image search with icrawler, resumably, into one folder per class.

icrawler's crawlers do the searching (Bing by default; Baidu, Google, Flickr,
or a list of URLs the user already has): its feeders build the result-page
URLs, its parsers read them, its thread pools download. On top of them this
module adds what a dataset needs and icrawler does not do:

- every download goes through one session with connect/read timeouts, a total
  time limit and a byte limit per file, a few retries with backoff on
  connection errors and 5xx answers, and at most 5 redirects;
- a file is kept only if Pillow decodes it completely and it passes the same
  size, aspect-ratio and pixel-count checks as `data_tools.clean`; bytes
  already in the dataset are not kept twice;
- files are named ``<class>/000001.<format>`` upwards by this module (never
  from the URL) and committed through `bagnet_keras.core.commit`: written
  and flushed under a hidden staged name, recorded in the manifest (the
  record, with the file's sha256, is the intent), then renamed. On resume a
  record whose rename a kill interrupted is finished (the staged bytes match
  the recorded sha256); a record without its bytes is dropped and its URL
  fetched again. So neither a failure nor SIGKILL at any instant leaves a
  partial or unrecorded file or loses a picture, and nothing is written
  outside ``root``;
- every URL that did not give a kept file is recorded, with the reason, in
  ``<root>/crawl_log.jsonl``;
- running the same crawl again resumes: URLs already tried are skipped, files
  are never overwritten, and each class is filled up to ``n_per_class``;
- one writer at a time: a second crawl, or a clean or split of the folder
  while a crawl writes it, stops with an error naming the lock file and the
  process holding it; a full disk stops the crawl with an error naming the
  folder (`bagnet_keras.core.commit.NoSpaceError`), keeping what it kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote_plus

from icrawler.storage import BaseStorage
from tqdm.auto import tqdm

from bagnet_keras.core.commit import (
    FULL_DISK_ERRNOS,
    append_lines,
    disk_full_errors,
    file_sha256,
    finish_staged,
    folder_lock,
    read_lines,
    recover,
    rename_durably,
    repair_lines,
    staged_path,
)
from bagnet_keras.core.validation import check_int, check_number, check_positive_int
from data_tools.engines import ENGINES, SEARCH_LIMIT, check_filters, finish_crawler, make_crawler
from data_tools.fetch import LimitedSession
from data_tools.images import MAX_PIXELS, Rejected, load_clean
from data_tools.manifest import manifest_path, read_manifest, write_manifest

CRAWL_LOG = "crawl_log.jsonl"
FLICKR_KEY_VARIABLE = "FLICKR_APIKEY"  # the variable icrawler's Flickr crawler reads

logger = logging.getLogger(__name__)

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif", "MPO": "jpg"}


@dataclass
class CrawlReport:
    """What `crawl` did.

    ``counts`` are the valid images per class afterwards, ``downloaded`` the
    files kept by this run, ``failures`` the URLs that gave no file by kind of
    reason (the text before the first colon), ``short`` how many images each
    class still lacks when the search ran out of results.
    """

    counts: dict[str, int] = field(default_factory=dict)
    downloaded: int = 0
    failures: Counter = field(default_factory=Counter)
    short: dict[str, int] = field(default_factory=dict)


class _Store(BaseStorage):
    """Files of one class: acceptance, names, the write through a temporary file, manifest and log lines.

    Shared by icrawler's downloader threads, so everything that counts goes
    under one lock: the class never gets more than its quota.
    """

    def __init__(self, root: str, label: str, state: _State, quota: int, options: dict, bar):
        self.root, self.label, self.state, self.options, self.bar = root, label, state, options, bar
        self.remaining = quota
        self.engine = self.query = ""
        self.kept = 0
        self.session: LimitedSession | None = None
        self.lock = threading.Lock()
        self.pending: dict[str, dict] = {}
        self.error: Exception | None = None
        self.signal = None  # the running crawler's, set by make_crawler
        self.unfinished: set[str] = set()  # claimed in this pass, not yet taken by a downloader thread
        self.attempts = 0  # URLs the downloader threads took, successful or not
        # Between passes: a parser thread that outlived finish_crawler's wait claims nothing after the release.
        self.closed = False

    def claim(self, url: str) -> bool:
        """True the first time ``url`` is seen in this dataset (so it gets one try), during a pass."""
        with self.lock:
            if url in self.state.urls or self.closed:
                return False
            self.state.urls.add(url)
            self.state.tried[self.label, self.query] += 1
            self.unfinished.add(url)
            return True

    def release_unfinished(self) -> int:
        """Unclaim the URLs of this pass no downloader took, so the next pass tries them; how many.

        icrawler's downloader threads stop when their queue stays empty for a moment (`QUEUE_POLL`) after a
        download, and the crawler then drops what the parser queues later: on a busy machine, URLs that
        were claimed but never tried, and a class reported short of results it had.
        """
        with self.lock:
            self.closed = True
            for url in self.unfinished:
                self.state.urls.discard(url)
                self.state.tried[self.label, self.query] -= 1
            count = len(self.unfinished)
            self.unfinished.clear()
        return count

    def accept(self, task: dict, content: bytes) -> bool:
        try:
            image = load_clean(
                io.BytesIO(content),
                min_size=self.options["min_size"],
                max_aspect=self.options["max_aspect"],
                max_pixels=self.options["max_pixels"],
                crop_borders=False,
            )
        except Rejected as reason:
            task["reason"] = str(reason)
            return False
        except Exception as error:
            # Pillow's decoders raise more than load_clean's OSError and ValueError on some corrupt files (an
            # IndexError, a struct.error). Uncaught, it ends the downloader thread before the URL is recorded,
            # and the next pass would fetch it again.
            task["reason"] = f"unreadable: {type(error).__name__}: {error}"
            return False
        sha256 = hashlib.sha256(content).hexdigest()
        with self.lock:
            if self.remaining <= 0:
                task["quota"] = True
                return False
            if sha256 in self.state.shas:
                task["reason"] = f"duplicate: the same bytes as {self.state.shas[sha256]}"
                return False
            path = f"{self.label}/{self.state.next_index[self.label]:06d}.{_EXTENSIONS.get(image.format, 'img')}"
            self.state.next_index[self.label] += 1
            self.state.shas[sha256] = path
            self.remaining -= 1
            self.pending[path] = task
        task.update(
            path=path, sha256=sha256, width=image.original_size[0], height=image.original_size[1], format=image.format
        )
        return True

    # icrawler's storage interface: ``id`` is the name our downloader's get_filename gave.
    def write(self, id, data):
        task = self.pending.pop(id)
        final = os.path.join(self.root, id)
        staged = staged_path(final)
        try:
            with open(staged, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            record = {
                "path": id,
                "class": self.label,
                "status": "ok",
                "engine": self.engine,
                "query": self.query,
                "url": task["file_url"],
                "sha256": task["sha256"],
                "width": task["width"],
                "height": task["height"],
                "format": task["format"],
                "bytes": len(data),
                "crawled": _now(),
            }
            if "page" in task:
                record["page"] = task["page"]
            with self.lock:
                append_lines(manifest_path(self.root), [record])
            # The record is the intent: a kill from here on is rolled forward by the next run's _reconcile.
            rename_durably(staged, final)
        except OSError as error:
            # Disk full or similar: no later file would fare better, so the crawl stops with this error.
            # A staged file whose record did not make it whole is of no use (the next run would drop it).
            with contextlib.suppress(OSError):
                os.remove(staged)
            self.error = error
            self.signal.set(reach_max_num=True)  # the crawl raises it when icrawler's threads have ended
            return
        with self.lock:
            self.kept += 1
            self.bar.update(1)

    def exists(self, id):
        return os.path.exists(os.path.join(self.root, id))

    def max_file_idx(self):
        return self.state.next_index[self.label] - 1

    def failed(self, task: dict) -> None:
        """Record why the URL of ``task`` gave no file (nothing when it was only left over at the quota)."""
        with self.lock:
            self.unfinished.discard(task["file_url"])
            self.attempts += 1
        if task.get("success") or task.get("quota"):
            return
        url = task["file_url"]
        reason = task.get("reason") or (self.session.errors.pop(url, None) if self.session else None)
        if reason is None:
            # Not downloaded because the class filled up meanwhile: free to be tried by a later run.
            with self.lock:
                self.state.urls.discard(url)
            return
        self.log(url, reason)

    def log(self, url: str, reason: str) -> None:
        entry = {"time": _now(), "class": self.label, "engine": self.engine, "query": self.query, "url": url}
        entry["reason"] = reason
        with self.lock:
            append_lines(os.path.join(self.root, CRAWL_LOG), [entry])
            self.state.failures[reason.split(":")[0]] += 1
        logger.warning("%s: %s (%s)", self.label, url, reason)


@dataclass
class _State:
    """What the dataset already holds: tried URLs, file hashes, next file number per class, failures."""

    urls: set = field(default_factory=set)
    shas: dict = field(default_factory=dict)
    next_index: Counter = field(default_factory=Counter)
    tried: Counter = field(default_factory=Counter)  # (class, query) -> URLs tried
    failures: Counter = field(default_factory=Counter)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _index(path: str) -> int:
    stem = os.path.splitext(os.path.basename(path))[0]
    return int(stem) if stem.isdigit() else 0


def _reconcile(root: str, labels: Sequence[str], options: dict) -> tuple[_State, dict[str, int]]:
    """Bring the manifest in line with the class folders after any earlier run, and read the state.

    Recovery first (`bagnet_keras.core.commit`): lines a kill cut short are
    cut off; a record whose file is missing is finished from its staged file
    when that holds the recorded bytes, and dropped otherwise (its URL will be
    fetched again), unless the file was committed and later removed (by hand
    or by clean), which leaves it marked missing; then every other temporary
    file goes. Valid files nobody recorded (added by hand) are adopted.
    Returns the state and the valid images per class.
    """
    repair_lines(manifest_path(root))
    repair_lines(os.path.join(root, CRAWL_LOG))
    records = read_manifest(root)
    for label in labels:
        os.makedirs(os.path.join(root, label), exist_ok=True)
    changed = _roll_forward(root, records)
    recover(root)
    changed = _adopt_unrecorded(root, labels, records, options) or changed
    if changed:
        write_manifest(root, records)
    return _read_state(root, labels, records)


def _roll_forward(root: str, records: dict[str, dict]) -> bool:
    """Finish or drop the records whose file is missing (in place); True if any changed."""
    changed = False
    for rel, record in list(records.items()):
        final = os.path.join(root, rel)
        if record.get("status") != "ok" or os.path.exists(final):
            continue
        if not os.path.exists(staged_path(final)):
            record.update(status="missing", reason="missing: the file is not in the dataset (removed)")
            changed = True
        elif not finish_staged(final, record["sha256"]):
            del records[rel]  # recorded, but its bytes never reached the disk whole: fetch it again
            changed = True
    return changed


def _adopt_unrecorded(root: str, labels: Sequence[str], records: dict[str, dict], options: dict) -> bool:
    """Record the valid files of the class folders that no record names (added by hand); True if any."""
    changed = False
    for label in labels:
        for name in sorted(os.listdir(os.path.join(root, label))):
            rel = f"{label}/{name}"
            if rel in records and records[rel].get("status") == "ok" or name.startswith("."):
                continue
            record = _found_record(root, rel, label, options)
            if record is not None:
                records[rel] = record
                changed = True
    return changed


def _found_record(root: str, rel: str, label: str, options: dict) -> dict | None:
    """The manifest record of a file found in a class folder, or None if it is not a valid image."""
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        return None
    try:
        image = load_clean(path, options["min_size"], options["max_aspect"], options["max_pixels"], False)
    except Rejected as reason:
        logger.warning("%s is not counted: %s (clean will quarantine it)", rel, reason)
        return None
    width, height = image.original_size
    return {
        "path": rel,
        "class": label,
        "status": "ok",
        "engine": None,
        "url": None,
        "sha256": file_sha256(path),
        "width": width,
        "height": height,
        "format": image.format,
        "crawled": _now(),
        "source": "found in the class folder",
    }


def _read_state(root: str, labels: Sequence[str], records: dict[str, dict]) -> tuple[_State, dict[str, int]]:
    """What the dataset holds (tried URLs, hashes, next file numbers) and the valid images per class."""
    state = _State()
    counts = Counter()
    for rel, record in records.items():
        label = record.get("class") or rel.split("/")[0]
        state.next_index[label] = max(state.next_index[label], _index(rel))
        if record.get("url"):
            state.urls.add(record["url"])
            state.tried[label, record.get("query")] += 1
        if record.get("status") == "ok":
            counts[label] += 1
            state.shas[record["sha256"]] = rel
    for label in labels:
        for name in os.listdir(os.path.join(root, label)):
            state.next_index[label] = max(state.next_index[label], _index(name))
        state.next_index[label] += 1
    for entry in read_lines(os.path.join(root, CRAWL_LOG)):
        state.urls.add(entry["url"])
        state.tried[entry.get("class"), entry.get("query")] += 1
    return state, {label: counts[label] for label in labels}


def check_label(label) -> str:
    """A class label that is a safe folder name, or a ValueError that says why not.

    Examples
    --------
    >>> check_label("Paris")
    'Paris'
    """
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"Class labels must be non-empty strings. Received: {label!r}")
    if label != label.strip() or any(c in label for c in "/\\:\0") or label.startswith((".", "_")):
        raise ValueError(
            f"Class label {label!r} cannot be a folder name: no slashes, colons or surrounding spaces, "
            "and no leading '.' or '_' (those folders are skipped by clean and split)."
        )
    return label


def load_classes(
    classes: str | Mapping[str, str | Sequence[str] | None] | Sequence[str],
    queries: Sequence[str] = ("{label}",),
    urls: bool = False,
) -> dict[str, list[str]]:
    """Classes and their search queries, from a mapping, a list of labels, or a YAML/JSON file of either.

    A label mapped to nothing gets ``queries``; queries are templates in which
    ``{label}`` is replaced by the label. With ``urls=True`` (the ``urls``
    engine) the values are the URLs themselves, or the paths of text files
    with one URL per line (relative to the folder of the YAML/JSON file), and
    are taken as they are.

    Examples
    --------
    >>> load_classes(["Paris", "Rome"], queries=["{label} street photo -art -fashion -food"])
    {'Paris': ['Paris street photo -art -fashion -food'], 'Rome': ['Rome street photo -art -fashion -food']}
    >>> load_classes({"Tokyo": ["Tokyo street", "Shibuya street"], "Oslo": None})
    {'Tokyo': ['Tokyo street', 'Shibuya street'], 'Oslo': ['Oslo']}
    """
    base = ""
    if isinstance(classes, str | os.PathLike):
        base = os.path.dirname(os.path.abspath(classes))
        classes = _read_class_file(os.fspath(classes))
    if isinstance(queries, str):
        queries = [queries]
    return {label: _class_queries(label, value, queries, urls, base) for label, value in _class_items(classes)}


def _class_items(classes) -> list[tuple]:
    """``(label, queries or None)`` pairs of a mapping or a list of labels, or a ValueError."""
    if isinstance(classes, Mapping):
        items = list(classes.items())
    elif isinstance(classes, Sequence) and not isinstance(classes, str):
        items = [(label, None) for label in classes]
    else:
        raise ValueError(
            f"`classes` must be a mapping label -> queries, a list of labels or a file. Received: {classes!r}"
        )
    if not items:
        raise ValueError("`classes` is empty: give at least one class label.")
    return items


def _class_queries(label, value, queries: Sequence[str], urls: bool, base: str) -> list[str]:
    """The queries (or URLs) of one class: ``value`` as given, or ``queries`` when it is empty."""
    check_label(label)
    if value is None or value == [] or value == "":
        if urls:
            raise ValueError(f"Class {label!r} has no URLs; give a list of URLs or a file of them.")
        value = list(queries)
    elif isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(q, str) and q.strip() for q in value):
        raise ValueError(f"Queries of class {label!r} must be non-empty strings. Received: {value!r}")
    if urls:
        return [os.path.join(base, v) if os.path.isfile(os.path.join(base, v)) else v for v in value]
    try:
        return [template.format(label=label) for template in value]
    except (KeyError, IndexError, ValueError):
        raise ValueError(
            f"A query template of class {label!r} in {value!r} has a placeholder other than {{label}}; "
            "double other braces ({{ }})."
        ) from None


def _read_class_file(path: str):
    if not os.path.isfile(path):
        raise ValueError(f"Classes file {path!r} does not exist.")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}).") from None
    import yaml

    try:
        return yaml.safe_load(text)  # safe_load builds plain data only; no tag can run code
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error}).") from None


def _url_list(queries: Sequence[str]) -> list[str]:
    urls = []
    for item in queries:
        if os.path.isfile(item):
            with open(item, encoding="utf-8") as f:
                urls += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        else:
            urls.append(item)
    return urls


def _check_options(n_per_class, engine, filters, threads, timeout, deadline, max_bytes, retries, backoff):
    check_positive_int(n_per_class, "n_per_class")
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}; choose one of {sorted(ENGINES)}.")
    if filters is not None and not isinstance(filters, Mapping):
        raise ValueError(f"`filters` must be a mapping such as {{'type': 'photo'}}. Received: {filters!r}")
    if engine == "urls" and filters:
        raise ValueError("The 'urls' engine takes no search filters; remove `filters`.")
    check_filters(engine, filters)
    if engine == "flickr" and not os.environ.get(FLICKR_KEY_VARIABLE):
        raise ValueError(f"The Flickr engine needs an API key in the environment variable {FLICKR_KEY_VARIABLE}.")
    check_int(threads, "threads", low=1, high=32)
    for name, value in (("timeout", timeout), ("deadline", deadline), ("max_bytes", max_bytes)):
        check_number(value, name, low=0, low_open=True)
    check_int(retries, "retries", low=0)
    check_number(backoff, "backoff", low=0)


def crawl(
    root: str,
    classes: str | Mapping[str, str | Sequence[str] | None] | Sequence[str],
    n_per_class: int,
    *,
    engine: str = "bing",
    queries: Sequence[str] = ("{label}",),
    filters: Mapping[str, object] | None = None,
    min_size: int = 64,
    max_aspect: float = 3.0,
    max_pixels: int = MAX_PIXELS,
    threads: int = 4,
    timeout: float = 10.0,
    deadline: float = 60.0,
    max_bytes: int = 50_000_000,
    retries: int = 2,
    backoff: float = 1.0,
    endpoint: str | None = None,
    progress: bool = True,
) -> CrawlReport:
    """Download up to ``n_per_class`` valid, distinct images per class into ``root/<class>/``.

    Run it again with the same arguments to resume or to top classes up (after
    `data_tools.clean` quarantined some): URLs already tried are skipped and
    no file is overwritten. Queries of a class are used in turn until the
    class is full or every query has run out of results.

    Parameters
    ----------
    root : str
        Dataset folder (created if missing). Only ``root/<class>/`` files,
        ``root/manifest.jsonl``, ``root/crawl_log.jsonl`` and a lock file are written.
    classes : mapping, list or str
        Labels and their queries; see `load_classes` (a path is a YAML or JSON file).
    n_per_class : int
        Images wanted per class.
    engine : {"bing", "baidu", "google", "flickr", "urls"}
        icrawler's crawler to use. ``"flickr"`` reads its API key from the
        environment variable ``FLICKR_APIKEY``; ``"urls"`` downloads the URLs
        given as the classes' queries.
    queries : sequence of str
        Query templates for labels given without queries.
    filters : mapping, optional
        The engine's search filters, passed to icrawler: for Bing ``type``,
        ``color``, ``size``, ``license``, ``layout``, ``people``, ``date``; for
        Baidu and Google their own; for Flickr any ``flickr.photos.search``
        parameter such as ``license``.
    min_size, max_aspect, max_pixels
        Files that `data_tools.clean` would reject for these reasons are not kept.
    threads : int
        Download threads (one feeder and one parser thread besides).
    timeout : float
        Seconds to connect and to wait for each piece of an answer.
    deadline : float
        Seconds a whole file may take.
    max_bytes : int
        Largest file accepted.
    retries, backoff : int, float
        Retries after connection errors and 429/5xx answers, waiting
        ``backoff * 2**(k-1)`` seconds before the k-th retry after the first.
    endpoint : str, optional
        Scheme and host to send the engine's searches to instead of its own
        (a mirror or caching proxy; the tests use a server on 127.0.0.1).
    progress : bool
        Show a progress bar per class when the output is a terminal.

    Returns
    -------
    CrawlReport

    Examples
    --------
    >>> report = crawl("datasets/streets", ["Paris", "Rome"], n_per_class=400,
    ...                queries=["{label} street photo -art -fashion -food"],
    ...                filters={"type": "photo"})  # doctest: +SKIP
    >>> report.counts  # doctest: +SKIP
    {'Paris': 400, 'Rome': 400}
    """
    _check_options(n_per_class, engine, filters, threads, timeout, deadline, max_bytes, retries, backoff)
    classes = load_classes(classes, queries, urls=engine == "urls")
    options = dict(min_size=min_size, max_aspect=max_aspect, max_pixels=max_pixels, timeout=timeout)
    options.update(deadline=deadline, max_bytes=max_bytes, retries=retries, backoff=backoff, threads=threads)
    os.makedirs(root, exist_ok=True)
    with folder_lock(root, "crawl"), disk_full_errors(root):
        state, counts = _reconcile(root, list(classes), options)
        report = CrawlReport(counts=dict(counts))
        for label, label_queries in classes.items():
            need = n_per_class - counts[label]
            if need <= 0:
                continue
            quiet = None if progress else True  # None: tqdm shows the bar on a terminal only
            with tqdm(total=n_per_class, initial=counts[label], desc=label, unit="img", disable=quiet) as bar:
                store = _Store(root, label, state, need, options, bar)
                _crawl_class(store, engine, label_queries, filters, threads, endpoint)
            report.downloaded += store.kept
            report.counts[label] += store.kept
            if store.remaining:
                report.short[label] = store.remaining
                have = n_per_class - store.remaining
                logger.warning("%s: %d of %d images; the queries ran out of results", label, have, n_per_class)
        report.failures = state.failures
    return report


def _crawl_class(store: _Store, engine: str, queries: list[str], filters, threads: int, endpoint) -> None:
    store.engine = engine
    if engine == "urls":
        store.query = "url list"
        while store.remaining > 0:
            store.closed = False
            urls = [url for url in _url_list(queries) if store.claim(url)]
            if not urls or not _crawl_pass(store, engine, threads, endpoint, url_list=urls, max_num=len(urls)):
                break
        return
    for query in queries:
        store.query = query
        while store.remaining > 0:
            before = store.remaining
            candidates = min(SEARCH_LIMIT[engine], store.state.tried[store.label, query] + 4 * store.remaining + 20)
            if engine == "flickr":
                arguments = dict(max_num=candidates, text=query, **dict(filters or {}))
            else:
                keyword = quote_plus(query) if ENGINES[engine].quote else query
                arguments = dict(keyword=keyword, filters=dict(filters) if filters else None, max_num=candidates)
            retry = _crawl_pass(store, engine, threads, endpoint, **arguments)
            if store.remaining == before and not retry:  # this query has nothing new left
                break


def _crawl_pass(store: _Store, engine: str, threads: int, endpoint, **arguments) -> bool:
    """One icrawler crawl into ``store``; whether another pass has URLs to try that this one left untried.

    Only after a pass that tried at least one URL: one whose downloader threads all died tried none, and
    another would end the same way.
    """
    attempts, store.closed = store.attempts, False
    crawler = make_crawler(engine, store, threads, endpoint)
    crawler.crawl(**arguments)
    finish_crawler(crawler)
    _raise_store_error(store)
    return store.release_unfinished() > 0 and store.attempts > attempts


def _raise_store_error(store: _Store) -> None:
    error = store.error
    if error is not None and error.errno in FULL_DISK_ERRNOS:
        raise error  # disk_full_errors says what to do
    if error is not None:
        raise OSError(error.errno, f"Could not write into {store.root!r}: {error.strerror or error}") from error
