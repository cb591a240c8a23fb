"""plotly.js's basic partial bundle: fetched from an npm registry against its sha512, served
versioned, and the pages' fallback to the full bundle when it is not installed."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nas.model.config import SupernetConfig
from reports.web import WebSettings, assets, create_app
from storage import open_database

from _synthetic import write_synthetic_study

VERSION = assets.plotly_js_version()
CODE = f"/**\n* plotly.js v{VERSION}\n*/\nwindow.Plotly = {{}};\n".encode()


def _tarball(code: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in ((assets.BASIC_MEMBER, code), ("package/LICENSE", b"MIT")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture()
def registry() -> Iterator[dict]:
    """A local stand-in for the npm registry (metadata and tarball), to isolate the fetch."""
    state: dict = {"tarball": _tarball(CODE), "integrity": None}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            base = f"http://127.0.0.1:{self.server.server_port}"
            if self.path == f"/{assets.BASIC_PACKAGE}/{VERSION}":
                digest = base64.b64encode(hashlib.sha512(state["tarball"]).digest()).decode()
                body = json.dumps({"dist": {"tarball": f"{base}/pkg.tgz", "integrity": state["integrity"] or f"sha512-{digest}"}})
                payload = body.encode()
            elif self.path == "/pkg.tgz":
                payload = state["tarball"]
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_port}"
    try:
        yield state
    finally:
        server.shutdown()


def test_fetch_installs_the_bundle_of_the_plotly_packages_version(registry: dict, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "BUNDLE_DIR", tmp_path / "bundles")
    path = assets.fetch_basic_bundle(registry=registry["url"])
    assert path == tmp_path / "bundles" / f"plotly-basic-{VERSION}.min.js"
    assert path.read_bytes() == CODE
    assert assets.basic_bundle_path() == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["LICENSE.plotly.js", path.name]


@pytest.mark.parametrize("damage", ["integrity", "version"])
def test_a_tarball_that_fails_its_check_installs_nothing(registry: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         damage: str) -> None:
    monkeypatch.setattr(assets, "BUNDLE_DIR", tmp_path / "bundles")
    if damage == "integrity":
        registry["integrity"] = "sha512-" + base64.b64encode(hashlib.sha512(b"another tarball").digest()).decode()
        match = "fails its sha512 check"
    else:
        registry["tarball"] = _tarball(b"/**\n* plotly.js v0.0.1\n*/\n")
        match = "names another version"
    with pytest.raises(RuntimeError, match=match):
        assets.fetch_basic_bundle(registry=registry["url"])
    assert assets.basic_bundle_path() is None
    assert not (tmp_path / "bundles").exists() or not any((tmp_path / "bundles").iterdir())


def _client(tmp_path: Path) -> TestClient:
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    config = SupernetConfig(vocab_size=256, d_model=64, n_layer=4, n_head=4, n_kv_head=2, d_ff=128)
    with open_database(url) as db:
        write_synthetic_study(db, name="demo", config=config, n_trials=6, seed=1)
    return TestClient(create_app(WebSettings(database_url=url, work_dir=tmp_path / "work", token="t" * 16)))


def test_pages_name_the_basic_bundle_first_and_the_full_one_for_other_traces(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "BUNDLE_DIR", tmp_path / "bundles")
    (tmp_path / "bundles").mkdir()
    (tmp_path / "bundles" / f"plotly-basic-{VERSION}.min.js").write_bytes(CODE)
    client = _client(tmp_path)
    html = client.get("/studies/demo").text
    assert f'<script src="{assets.basic_bundle_url()}"></script>' in html
    assert f'<script src="{assets.PLOTLY_URL}"></script>' not in html
    assert json.dumps(assets.PLOTLY_URL) in html  # app.js's on-demand full bundle
    reply = client.get(assets.basic_bundle_url(), headers={"Accept-Encoding": "identity"})
    assert reply.status_code == 200 and reply.content == CODE
    assert "immutable" in reply.headers["cache-control"]
    assert client.get("/static/plotly-basic-0.0.1.min.js").status_code == 404


def test_without_the_basic_bundle_pages_load_the_full_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "BUNDLE_DIR", tmp_path / "none")
    client = _client(tmp_path)
    html = client.get("/studies/demo").text
    assert f'<script src="{assets.PLOTLY_URL}"></script>' in html
    assert "full: null" in html
    assert client.get(assets.basic_bundle_url()).status_code == 404
