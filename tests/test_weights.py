"""Pretrained-weight download, verification and caching, against a server on 127.0.0.1."""

import hashlib
import http.server
import os
import threading

import keras
import numpy as np
import pytest
from conftest import build_tiny, fixture_path, tiny_config, tiny_outputs

from bagnet_keras import BagNet9
from bagnet_keras.models import load_imagenet_weights
from bagnet_keras.models import weights as weights_module


class _Server:
    """Serves one file; ``mode`` says how: ok, truncated, short (no length), wrong, 404."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.mode = "ok"
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                if server.mode == "404":
                    self.send_error(404)
                    return
                body = server.payload
                if server.mode == "wrong":
                    body = bytes(reversed(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if server.mode != "short":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode in ("truncated", "short"):
                    body = body[: len(body) // 2]
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/weights/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tiny_record(monkeypatch):
    """Register the tiny33 fixture as a pretrained model, the way the real ones are."""
    payload = open(fixture_path("tiny33.pth.tar"), "rb").read()
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    c = tiny_config("tiny33")
    record = weights_module.PretrainedConfig(
        f"tiny33-{prefix}.pth.tar",
        prefix,
        tuple(c["blocks"]),
        tuple(c["kernel3"]),
        tuple(c["strides"]),
        8,
        c["classes"],
    )
    monkeypatch.setitem(weights_module.PRETRAINED, "tiny33", record)
    return record, payload


def _cache_files():
    folder = os.path.join(os.environ["KERAS_HOME"], "models")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_download_verify_convert_and_reuse(tiny_record):
    record, payload = tiny_record
    out = tiny_outputs("tiny33")
    with _Server(payload) as server:
        model = build_tiny("tiny33")
        load_imagenet_weights(model, "tiny33", base_url=server.url)
        assert server.requests == [f"/weights/{record.filename}"]
        stem = record.filename[: -len(".pth.tar")]
        assert _cache_files() == [record.filename, stem + ".weights.h5"]
        np.testing.assert_allclose(model.predict(out["inputs"], verbose=0), out["logits"], atol=1e-4)

        again = build_tiny("tiny33")
        load_imagenet_weights(again, "tiny33", base_url=server.url)
        assert len(server.requests) == 1  # served from the cache
        np.testing.assert_array_equal(again.predict(out["inputs"], verbose=0), model.predict(out["inputs"], verbose=0))

        backbone = build_tiny("tiny33", include_top=False)
        load_imagenet_weights(backbone, "tiny33", base_url=server.url)
        features = keras.Model(model.inputs, model.get_layer("avg_pool").input)
        # BagNet predict folds BatchNorm into the convolutions: equal up to float rounding, not bit for bit
        np.testing.assert_allclose(
            backbone.predict(out["inputs"], verbose=0), features.predict(out["inputs"], verbose=0), atol=1e-4
        )


@pytest.mark.parametrize(
    "mode, error", [("truncated", OSError), ("short", ValueError), ("wrong", ValueError), ("404", OSError)]
)
def test_bad_download_leaves_nothing_usable(tiny_record, mode, error):
    record, payload = tiny_record
    with _Server(payload) as server:
        server.mode = mode
        with pytest.raises(error, match=record.filename if mode != "404" else "404"):
            load_imagenet_weights(build_tiny("tiny33"), "tiny33", base_url=server.url)
        assert _cache_files() == []
        # A later call downloads again and succeeds.
        server.mode = "ok"
        model = build_tiny("tiny33")
        load_imagenet_weights(model, "tiny33", base_url=server.url)
        assert len(server.requests) == 2
    out = tiny_outputs("tiny33")
    np.testing.assert_allclose(model.predict(out["inputs"], verbose=0), out["logits"], atol=1e-4)


def test_partial_file_of_a_killed_download_is_never_used(tiny_record):
    record, payload = tiny_record
    folder = os.path.join(os.environ["KERAS_HOME"], "models")
    os.makedirs(folder)
    with open(os.path.join(folder, record.filename + ".part"), "wb") as f:
        f.write(payload[:1000])
    with _Server(payload) as server:
        load_imagenet_weights(build_tiny("tiny33"), "tiny33", base_url=server.url)
        assert len(server.requests) == 1
    assert record.filename + ".part" not in _cache_files()


def test_cached_file_with_wrong_hash_is_reported(tiny_record):
    record, _ = tiny_record
    folder = os.path.join(os.environ["KERAS_HOME"], "models")
    os.makedirs(folder)
    with open(os.path.join(folder, record.filename), "wb") as f:
        f.write(b"not the checkpoint")
    with pytest.raises(ValueError, match=f"{record.sha256_prefix}.*Delete it"):
        load_imagenet_weights(build_tiny("tiny33"), "tiny33")


def test_offline_error_names_the_url_and_where_to_put_the_file(monkeypatch):
    with _Server(b"") as server:
        url = server.url
    monkeypatch.setenv("BAGNET_KERAS_WEIGHTS_URL", url)  # the server is gone: connection refused
    with pytest.raises(OSError) as info:
        BagNet9(weights="imagenet")
    message = str(info.value)
    assert url + "bagnet8-34f4ccd2.pth.tar" in message
    assert os.path.join(os.environ["KERAS_HOME"], "models", "bagnet8-34f4ccd2.pth.tar") in message
    assert _cache_files() == []
