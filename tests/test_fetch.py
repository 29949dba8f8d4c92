"""Published weights by name (basenji2_fast.fetch), against a local HTTP server.

These machines cannot reach the real hosts, so the test serves files itself on 127.0.0.1
and points $BASENJI2_FAST_WEIGHTS_URL at it: the full-size fixture with the real Basenji2
architecture (random weights) as a good model_human.h5, and broken copies of it: a transfer
that breaks off, a complete transfer of a truncated file, a damaged HDF5 header, a small
model under the big one's name; for the .pth, files whose md5 is not the published one.
"""
from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

import basenji2_fast as b2
from basenji2_fast import cli, fetch
from basenji2_fast.formats import load_spec
from basenji2_fast.formats.published import PUBLISHED_FILES

from conftest import fixture_path


class _Server:
    """Serves ``routes[path] = (body bytes or a file Path, mode)`` on 127.0.0.1; mode
    "ok" (whole body) or "cut" (announces the whole length, sends a tenth, closes)."""

    def __init__(self):
        self.routes, self.hits = {}, []
        routes, hits = self.routes, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                if self.path not in routes:
                    self.send_error(404)
                    return
                body, mode = routes[self.path]
                data = body.read_bytes() if isinstance(body, Path) else body
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data if mode == "ok" else data[:len(data) // 10])
                if mode == "cut":
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def serve(server, monkeypatch, tmp_path):
    """serve(name, body, mode="ok"): publish ``body`` as ``<url>/<case>/<name>`` and point the
    fetcher (a fresh cache under tmp_path) at that folder."""
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))

    def put(name, body, mode="ok", case="case"):
        server.routes[f"/{case}/{name}"] = (body, mode)
        monkeypatch.setenv(fetch.URL_ENV, f"{server.url}/{case}")
        return tmp_path / "cache"

    return put


@pytest.fixture(scope="module")
def full_h5():
    return fixture_path("tf-full", "model_human.h5")


def _cache_files(cache: Path):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@pytest.mark.slow
def test_fetch_checks_records_and_reuses_the_h5(serve, server, full_h5):
    cache = serve("model_human.h5", full_h5, case="good")
    path = fetch.fetch("human")
    assert path == cache / "model_human.h5"
    assert path.read_bytes() == full_h5.read_bytes()
    sha = hashlib.sha256(full_h5.read_bytes()).hexdigest()
    assert (cache / "model_human.h5.sha256").read_text().split() == [sha, "model_human.h5"]
    assert _cache_files(cache) == ["model_human.h5", "model_human.h5.sha256"]  # no temporaries
    hits = len(server.hits)
    assert fetch.fetch("human") == path and len(server.hits) == hits  # from the cache, no download
    # load by name: the file's model, nothing downloaded again
    model = b2.load("basenji2", threads=1)
    assert len(server.hits) == hits and model.load_options["path"] == "basenji2"
    ref = load_spec(full_h5)
    assert model.spec.heads["human"].tracks == 5313
    np.testing.assert_array_equal(model.spec.heads["human"].weight, ref.heads["human"].weight)
    np.testing.assert_array_equal(model.spec.ops[5].kernel, ref.ops[5].kernel)
    # damaged on disk after it was checked: checked again, downloaded again
    path.write_bytes(full_h5.read_bytes()[:1_000_000])
    assert fetch.fetch("human") == path
    assert len(server.hits) == hits + 1 and path.read_bytes() == full_h5.read_bytes()
    assert _cache_files(cache) == ["model_human.h5", "model_human.h5.sha256"]


def _damaged_header(full_h5: Path) -> bytes:
    data = bytearray(full_h5.read_bytes())
    data[0:8] = b"\0" * 8  # the HDF5 signature and superblock
    data[64:4096] = bytes(4096 - 64)
    return bytes(data)


@pytest.mark.parametrize("case", ["cut", "truncated", "damaged", "small"])
def test_a_bad_h5_is_refused_and_not_kept(serve, full_h5, case, capsys):
    if case == "cut":
        cache = serve("model_human.h5", full_h5, mode="cut", case=case)
        why = "cannot download model_human.h5"
    elif case == "truncated":
        cache = serve("model_human.h5", full_h5.read_bytes()[:5_000_000], case=case)
        why = "does not load"
    elif case == "damaged":
        cache = serve("model_human.h5", _damaged_header(full_h5), case=case)
        why = "does not load"
    else:  # a small model with the right name: loads, but is not Basenji2
        cache = serve("model_human.h5", fixture_path("tf-small", "model.h5"), case=case)
        why = "is not the published Basenji2 human model: sequence length 16384 != 131072"
    with pytest.raises(fetch.FetchError, match=why) as e:
        fetch.fetch("human")
    assert "\n" not in str(e.value)
    assert _cache_files(cache) == []
    if case == "truncated":  # the command line: one line on stderr, exit 1
        assert cli.main(["fetch", "human", "-q"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("basenji2-fast fetch: error: model_human.h5 from http://127.0.0.1:")
        assert len(err.splitlines()) == 1 and why in err
        assert _cache_files(cache) == []


def test_the_human_file_under_the_mouse_name_is_refused(serve, full_h5):
    cache = serve("model_mouse.h5", full_h5)
    with pytest.raises(fetch.FetchError, match=r"not the published Basenji2 mouse model: head weight \(1536, 5313\)"):
        fetch.fetch("mouse")
    assert _cache_files(cache) == []


@pytest.mark.parametrize("mode", ["ok", "cut"])
def test_a_pth_with_another_md5_is_refused_and_not_kept(serve, mode):
    pth = fixture_path("tf-small", "model_basenji2_pytorch.pth")
    cache = serve("basenji2.pth", pth, mode=mode)
    why = "md5 is not the published 1f46acc933e05515faf4d7eec0e27d42" if mode == "ok" else "cannot download"
    with pytest.raises(fetch.FetchError, match=why):
        fetch.fetch("pth")
    assert _cache_files(cache) == []


def test_a_pth_with_the_published_md5_is_kept(serve, monkeypatch, capsys):
    """The real basenji2.pth cannot be served here: a small file stands in, with its own md5
    as the published one."""
    pth = fixture_path("tf-small", "model_basenji2_pytorch.pth")
    md5 = hashlib.md5(pth.read_bytes()).hexdigest()
    monkeypatch.setitem(PUBLISHED_FILES, "pth", fetch.PublishedFile("pth", "basenji2.pth", "unused", "human", 12, md5))
    cache = serve("basenji2.pth", pth)
    assert cli.main(["fetch", "pth", "-q", "--cache", str(cache / "other")]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(cache / "other" / "basenji2.pth")
    assert Path(out).read_bytes() == pth.read_bytes()
    assert _cache_files(cache / "other") == ["basenji2.pth", "basenji2.pth.sha256"]


def test_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="no published file 'rat'"):
        fetch.fetch("rat", cache=tmp_path)
    with pytest.raises(ValueError, match="no published model 'basenji3'"):
        fetch.published_spec("basenji3")
    assert not fetch.is_published_name("basenji3") and fetch.is_published_name("basenji2-both")
