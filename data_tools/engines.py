"""icrawler's crawlers, wired for datasets: engine table, parser and downloader hooks, clean shutdown.

Everything network-facing is icrawler's own (feeders, parsers, thread pools)
except the Bing parser, which reads every result instead of only ``.jpg``
URLs. The hooks send each downloaded file to a store (`data_tools.crawl`)
that decides whether it is kept and what it is called.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import dataclass

from bs4 import BeautifulSoup
from icrawler import Crawler as _IcrawlerCrawler
from icrawler.builtin import BaiduImageCrawler, BingImageCrawler, FlickrImageCrawler, GoogleImageCrawler, UrlListCrawler
from icrawler.builtin.bing import BingParser
from icrawler.downloader import ImageDownloader

from data_tools.fetch import LimitedSession

logger = logging.getLogger(__name__)


class _BingParser(BingParser):
    """Every image result of a Bing page: icrawler's parser keeps only URLs containing ``.jpg``."""

    def parse(self, response):
        soup = BeautifulSoup(response.content.decode("utf-8", "ignore"), "lxml")
        for div in soup.find_all("div", class_="imgpt"):
            try:
                meta = json.loads(div.a["m"])
            except (TypeError, KeyError, ValueError):
                continue
            if isinstance(meta, dict) and isinstance(meta.get("murl"), str):
                task = {"file_url": meta["murl"]}
                if isinstance(meta.get("purl"), str):
                    task["page"] = meta["purl"]
                yield task


@dataclass(frozen=True)
class _Engine:
    crawler: type
    origin: str | None  # where its feeder sends searches; `endpoint` replaces it
    quote: bool  # its feeder pastes the keyword into the URL unquoted
    parser: type | None = None  # ours instead of the crawler's own


ENGINES = {
    "bing": _Engine(BingImageCrawler, "https://www.bing.com", True, _BingParser),
    "baidu": _Engine(BaiduImageCrawler, "http://image.baidu.com", True),
    "google": _Engine(GoogleImageCrawler, "https://www.google.com", False),
    "flickr": _Engine(FlickrImageCrawler, "https://api.flickr.com", False),
    "urls": _Engine(UrlListCrawler, None, False),
}
SEARCH_LIMIT = {"bing": 1000, "baidu": 1000, "google": 1000, "flickr": 4000}


class _Downloader(ImageDownloader):
    """icrawler's image downloader, deciding through the store what is kept and how it is named."""

    def __init__(self, thread_num, signal, session, storage):
        super().__init__(thread_num, signal, session, storage)
        self.logger = logger

    def start(self, file_idx_offset=0, *args, **kwargs):
        # The engine's max_num sizes its result pages; how many files to keep is the store's quota.
        # overwrite=True only skips icrawler's exists-check: the store's names are never reused.
        timeout = self.storage.options["timeout"]
        kwargs.update(
            max_num=self.storage.remaining, overwrite=True, max_retry=1, req_timeout=timeout, queue_timeout=QUEUE_POLL
        )
        super().start(0, *args, **kwargs)

    def keep_file(self, task, response, **kwargs):
        return self.storage.accept(task, response.content)

    def get_filename(self, task, default_ext):
        return task["path"]

    def process_meta(self, task):
        self.storage.failed(task)


#: Seconds icrawler's parser and downloader threads wait on an empty queue before they look whether the
#: threads feeding them are done. Only how soon a pass over a class ends depends on it: icrawler's own 2 s
#: (parsers) and 5 s (downloaders) were added to every pass.
QUEUE_POLL = 0.1


class _QuickExit:
    """Parser mixin: look every `QUEUE_POLL` seconds, not every 2 s, whether the feeder is done."""

    def __init__(self, *args, store, **kwargs):
        super().__init__(*args, **kwargs)
        self.store = store
        self.logger = logger

    def worker_exec(self, queue_timeout=2, **kwargs):
        super().worker_exec(queue_timeout=QUEUE_POLL, **kwargs)


class _UnseenOnly(_QuickExit):
    """Parser mixin: yield only result URLs this dataset has not tried yet; record failed pages."""

    def worker_exec(self, queue_timeout=2, req_timeout=5, max_retry=3, **kwargs):
        # The session retries with backoff; icrawler's own loop would retry again without any.
        timeout = self.store.options["timeout"]
        super().worker_exec(queue_timeout=queue_timeout, req_timeout=timeout, max_retry=1, **kwargs)

    def parse(self, response, **kwargs):
        if response.status_code != 200:
            self.store.log(response.url, f"search page: HTTP {response.status_code}")
            return
        for task in super().parse(response, **kwargs):
            if self.store.claim(task["file_url"]):
                yield task


class _PromptCrawler(_IcrawlerCrawler):
    """icrawler's `Crawler.crawl`, watching its thread pools every 20 ms instead of every second.

    icrawler tells the parsers that the feeders are done, and the
    downloaders that the parsers are, only at its next once-a-second look,
    which adds about 2 s to every pass over a class. Sits between an engine's
    crawler and icrawler's base class (see `make_crawler`).
    """

    def crawl(self, feeder_kwargs=None, parser_kwargs=None, downloader_kwargs=None):
        self.signal.reset()
        self.feeder.start(**(feeder_kwargs or {}))
        self.parser.start(**(parser_kwargs or {}))
        self.downloader.start(**(downloader_kwargs or {}))
        while self.downloader.is_alive():
            if not self.feeder.is_alive():
                self.signal.set(feeder_exited=True)
            if not self.parser.is_alive():
                self.signal.set(parser_exited=True)
            time.sleep(0.02)
        for pool in (self.feeder, self.parser):
            if not pool.in_queue.empty():
                pool.clear_buffer()
        if not self.downloader.in_queue.empty():
            self.downloader.clear_buffer(True)


def make_crawler(engine: str, store, threads: int, endpoint: str | None):
    """An icrawler crawler of ``engine`` wired to ``store``, with our session and quiet logging."""
    spec = ENGINES[engine]
    route = (spec.origin, endpoint.rstrip("/")) if endpoint and spec.origin else None
    base = spec.parser or _default_argument(spec.crawler, "parser_cls")
    # The URL-list crawler has no pages: its list is filtered before feeding.
    mixin = _QuickExit if engine == "urls" else _UnseenOnly
    parser_cls = type(f"{mixin.__name__.strip('_')}{base.__name__}", (mixin, base), {})

    class Crawler(spec.crawler, _PromptCrawler):  # the engine's crawl() reaches _PromptCrawler.crawl
        def set_logger(self, log_level=logging.INFO):
            # icrawler's version calls logging.basicConfig, which would configure the caller's logging.
            self.logger = logger

        def set_session(self, headers=None):
            super().set_session(headers)
            session = LimitedSession(self.proxy_pool, store.options, route)
            session.headers.update(self.session.headers)
            self.session = store.session = session

    crawler = Crawler(
        downloader_cls=_Downloader,
        downloader_threads=threads,
        storage=store,
        parser_cls=parser_cls,
        extra_parser_args={"store": store},
    )
    crawler.feeder.logger = logger
    store.signal = crawler.signal
    return crawler


def check_filters(engine: str, filters: dict | None) -> None:
    """Raise ValueError unless the engine's icrawler feeder accepts ``filters`` (checked offline)."""
    if not filters or engine not in ("bing", "baidu", "google"):
        return
    feeder_cls = _default_argument(ENGINES[engine].crawler, "feeder_cls")
    # get_filter only builds the rule table; it needs none of the feeder's threads or session.
    rules = feeder_cls.get_filter(feeder_cls.__new__(feeder_cls))
    try:
        rules.apply(dict(filters))
    except (KeyError, TypeError, ValueError, AssertionError) as error:
        raise ValueError(f"Bad search filters {dict(filters)!r} for {engine}: {error}") from None


def _default_argument(cls: type, name: str):
    return inspect.signature(cls.__init__).parameters[name].default


def finish_crawler(crawler, limit: float = 60.0) -> None:
    """Let icrawler's feeder and parser threads end: they can block on full queues nobody reads."""
    crawler.signal.set(reach_max_num=True)
    stop = time.monotonic() + limit
    workers = crawler.feeder.workers + crawler.parser.workers
    while any(w.is_alive() for w in workers) and time.monotonic() < stop:
        for pool in (crawler.feeder, crawler.parser):
            queue = pool.out_queue
            with queue.mutex:  # what Queue.get does, for every item at once
                queue.queue.clear()
                queue.not_full.notify_all()
        for w in workers:
            w.join(0.05)
    if any(w.is_alive() for w in workers):
        logger.warning("icrawler threads still busy after %g s; continuing without them", limit)
