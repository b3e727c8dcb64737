"""A stand-in for image search engines and image hosts, on 127.0.0.1, for the crawl tests.

It answers the requests icrawler's own feeders make, in the formats their
parsers read (Bing's async result page, Baidu's acjson, Flickr's REST API),
serves images made by the tests, and misbehaves on the ``/fault/`` paths in
the ways real hosts do.
"""

from __future__ import annotations

import html
import http.server
import io
import json
import socket
import struct
import threading
import time
import zlib
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image

from data_tools.synthetic import scene

FAULTS = (
    "404",
    "500",
    "reset",
    "timeout",
    "trickle",
    "truncated-body",
    "truncated-image",
    "html",
    "bomb",
    "redirect-loop",
)


def jpeg_bytes(seed: int, size: int = 96) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(scene(seed, size)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png_bytes(seed: int, size: int = 96) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(scene(seed, size)).save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png(side: int = 30000) -> bytes:
    """A valid PNG header claiming side x side pixels, with a tiny body: it must be refused before decoding."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def bing_page(urls: list[str]) -> str:
    """A Bing ``images/async`` result page: each hit a ``div.imgpt`` whose anchor's ``m`` holds JSON."""
    items = []
    for k, url in enumerate(urls):
        meta = {"murl": url, "turl": f"https://tse.example/th?id={k}", "purl": f"https://page.example/{k}"}
        items.append(
            f'<li><div class="iuscp"><div class="imgpt"><a class="iusc" m="{html.escape(json.dumps(meta))}" '
            f'href="/images/search?view=detailV2&amp;id={k}"><img class="mimg" src="x"></a></div></div></li>'
        )
    return f'<html><body><ul class="dgControl_list">{"".join(items)}</ul></body></html>'


class SearchServer:
    """Serves search results from ``results`` (query -> list of URLs or ``/img/`` paths) and ``images``.

    ``images`` maps a name under ``/img/`` to bytes; ``delay`` slows every
    image down (for the kill test). ``requests`` lists every path asked for.
    """

    def __init__(self, delay: float = 0.0, timeout_sleep: float = 3.0):
        self.results: dict[str, list[str]] = {}
        self.images: dict[str, bytes] = {}
        self.delay = delay
        self.timeout_sleep = timeout_sleep
        self.requests: list[str] = []
        self.headers: list[dict] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY the body waits ~40 ms for the
            # client's delayed ACK, on every request.
            disable_nagle_algorithm = True

            def do_GET(self):
                server.requests.append(self.path)
                server.headers.append(dict(self.headers))
                try:
                    server.route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def absolute(self, url: str) -> str:
        return self.url + url if url.startswith("/") else url

    # -- answers
    def send(self, handler, body: bytes, content_type: str, status: int = 200) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def route(self, handler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = unquote(parts.path)
        if path == "/images/async":  # Bing; icrawler's feeder steps `first` by 20, Bing pages hold 35
            urls = self.results.get(query.get("q", ""), [])
            first = int(query.get("first", 0))
            page = bing_page([self.absolute(u) for u in urls[first : first + 35]])
            self.send(handler, page.encode(), "text/html; charset=utf-8")
        elif path == "/search/acjson":  # Baidu: 30 per page, plain hoverURL entries
            urls = self.results.get(query.get("word", ""), [])
            pn = int(query.get("pn", 0))
            data = [{"hoverURL": self.absolute(u)} for u in urls[pn : pn + 30]] + [{}]
            self.send(handler, json.dumps({"data": data}).encode(), "application/json")
        elif path == "/services/rest/":  # Flickr: search pages, then getSizes per photo
            self.flickr(handler, query)
        elif path.startswith("/img/") or path.endswith("/escape.jpg"):
            name = path.rsplit("/", 1)[-1]
            if name not in self.images:
                self.send(handler, b"not found", "text/plain", 404)
                return
            time.sleep(self.delay)
            body = self.images[name]
            self.send(handler, body, "image/png" if body.startswith(b"\x89PNG") else "image/jpeg")
        elif path.startswith("/fault/"):
            self.fault(handler, path.split("/")[2].rsplit(".", 1)[0])
        else:
            self.send(handler, b"not found", "text/plain", 404)

    def flickr(self, handler, query: dict) -> None:
        if query.get("method") == "flickr.photos.search":
            urls = self.results.get(query.get("text", ""), [])
            page = int(query.get("page", 1))
            ids = [{"id": f"{query['text']}|{k}"} for k in range((page - 1) * 100, min(page * 100, len(urls)))]
            body = {"stat": "ok", "photos": {"page": page, "photo": ids}}
        else:
            text, k = query.get("photo_id", "|0").rsplit("|", 1)
            url = self.absolute(self.results[text][int(k)])
            body = {"stat": "ok", "sizes": {"size": [{"label": "Original", "source": url}]}}
        self.send(handler, json.dumps(body).encode(), "application/json")

    def fault(self, handler, kind: str) -> None:
        good = jpeg_bytes(999)
        if kind == "404":
            self.send(handler, b"gone", "text/plain", 404)
        elif kind == "500":
            self.send(handler, b"oops", "text/plain", 500)
        elif kind == "reset":
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            handler.close_connection = True
        elif kind == "timeout":
            time.sleep(self.timeout_sleep)
            self.send(handler, good, "image/jpeg")
        elif kind == "trickle":
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", str(len(good)))
            handler.end_headers()
            for k in range(len(good)):
                handler.wfile.write(good[k : k + 1])
                handler.wfile.flush()
                time.sleep(0.05)
        elif kind == "truncated-body":  # the connection drops before the announced length
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", str(len(good)))
            handler.end_headers()
            handler.wfile.write(good[: len(good) // 2])
            handler.wfile.flush()
            handler.close_connection = True
        elif kind == "truncated-image":  # honest length, but the file itself is cut
            self.send(handler, good[: len(good) // 2], "image/jpeg")
        elif kind == "html":
            self.send(handler, b"<html><body>Access denied</body></html>", "image/jpeg")
        elif kind == "bomb":
            self.send(handler, bomb_png(), "image/png")
        elif kind == "redirect-loop":
            handler.send_response(302)
            handler.send_header("Location", handler.path)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        else:
            self.send(handler, b"unknown fault", "text/plain", 404)
