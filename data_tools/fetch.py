"""HTTP for crawling: icrawler's session with the limits a crawl of unknown hosts needs.

Each response body is read in full here, within a total time and a byte
limit, so icrawler's download and parse code sees ordinary responses; a host
that trickles bytes, sends endless data, drops the connection or redirects in
a loop costs one thread a bounded time and leaves a reason, never a file.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import requests
import urllib3
from icrawler.utils import Session
from requests.adapters import HTTPAdapter
from urllib3.exceptions import LocationParseError
from urllib3.util.retry import Retry

logger = logging.getLogger(__name__)

RETRY_STATUS = (429, 500, 502, 503, 504)
MAX_REDIRECTS = 5


class DownloadRefused(Exception):
    """A response refused while reading it; the message is the reason recorded."""


def describe_error(error: Exception) -> str:
    """A short reason for the crawl log: a kind, a colon, and what happened."""
    if isinstance(error, DownloadRefused):
        return str(error)
    # requests wraps what urllib3 gave up on (after its retries) in a ConnectionError: name the cause.
    cause = getattr(error.args[0], "reason", None) if error.args else None
    if isinstance(error, requests.exceptions.ConnectionError) and isinstance(cause, Exception):
        error = cause
    kinds = [
        (requests.exceptions.TooManyRedirects, "redirect loop"),
        ((requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema), "unsupported URL"),
        ((requests.exceptions.InvalidURL, UnicodeError, LocationParseError), "invalid URL"),
        ((requests.exceptions.Timeout, TimeoutError, urllib3.exceptions.TimeoutError), "timeout"),
        ((requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError), "broken connection"),
        ((requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError), "undecodable body"),
    ]
    text = " ".join(str(error).split())[:200]
    for types, kind in kinds:
        if isinstance(error, types):
            return f"{kind}: {text}"
    return f"connection failed: {type(error).__name__}: {text}"


class LimitedSession(Session):
    """icrawler's session with timeouts, a time and size limit per response, retries and routing.

    ``options`` holds ``timeout`` (connect and per-read seconds), ``deadline``
    (seconds for a whole response), ``max_bytes``, ``retries``, ``backoff``
    and ``threads``. Requests to URLs starting with ``route[0]`` go to
    ``route[1]`` instead. Why a URL failed is kept in ``errors`` for the crawl log.
    """

    def __init__(self, proxy_pool, options: dict, route: tuple[str, str] | None):
        super().__init__(proxy_pool)
        self.timeout = options["timeout"]
        self.deadline = options["deadline"]
        self.max_bytes = options["max_bytes"]
        self.route = route
        self.errors: dict[str, str] = {}
        self.max_redirects = MAX_REDIRECTS
        retry = Retry(
            total=options["retries"],
            backoff_factor=options["backoff"],
            status_forcelist=RETRY_STATUS,
            allowed_methods=frozenset({"GET"}),
            raise_on_status=False,
            # A server asking for minutes would stall every thread; the backoff is polite enough.
            respect_retry_after_header=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=options["threads"] + 2)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def get(self, url, **kwargs):
        kwargs.update(timeout=self.timeout, stream=True)
        target = url
        if self.route and url.startswith(self.route[0]):
            target = self.route[1] + url[len(self.route[0]) :]
        try:
            if urlsplit(target).scheme.lower() not in ("http", "https"):
                raise requests.exceptions.InvalidSchema(f"only http(s) URLs are downloaded, not {target[:100]!r}")
            response = super().get(target, **kwargs)
            if response.status_code != 200:
                response.close()
                response._content = b""
                self.errors[url] = f"HTTP {response.status_code}: {response.reason}"
                return response
            response._content = self._read(response)
        except Exception as error:
            self.errors[url] = describe_error(error)
            logger.info("%s: %s", url, self.errors[url])
            raise
        return response

    def _read(self, response: requests.Response) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise DownloadRefused(f"too large: {declared} bytes announced, the limit is {self.max_bytes}")
        stop = time.monotonic() + self.deadline
        body = bytearray()
        try:
            # read1 returns what has arrived, so a server trickling bytes meets the deadline too.
            while chunk := response.raw.read1(1 << 16, decode_content=True):
                body += chunk
                if len(body) > self.max_bytes:
                    raise DownloadRefused(f"too large: more than {self.max_bytes} bytes")
                if time.monotonic() > stop:
                    raise DownloadRefused(f"too slow: not complete after {self.deadline:g} s")
        finally:
            response.close()
        return bytes(body)
