"""The tracking server's health check with credentials: from the URI or MLflow's environment
variables, sent as MLflow's client sends them, never printed."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vidablate.errors import ConfigError
from vidablate.sweep.preflight import _health_request, check_tracking
from vidablate.sweep.provenance import run_tags

GOOD = "Basic " + base64.b64encode(b"alice:s3cr:et").decode()


class Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        ok = self.path == "/health" and self.headers.get("Authorization") == GOOD
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b"OK" if ok else b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_credentials_in_the_uri_reach_the_health_check(server, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    check_tracking(f"http://alice:s3cr%3Aet@{server}")  # ':' in a password is %-quoted


def test_credentials_from_mlflows_environment(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cr:et")
    check_tracking(f"http://{server}/")


def test_refused_credentials_are_named_and_not_printed(server, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    with pytest.raises(ConfigError) as err:
        check_tracking(f"http://alice:wrong-pw@{server}")
    assert "refused the credentials (HTTP 401)" in str(err.value)
    assert "wrong-pw" not in str(err.value) and "alice:***@" in str(err.value)


def test_health_url_drops_the_user_part():
    url, headers = _health_request("https://bob:pw@mlflow.example:8443/prefix/")
    assert url == "https://mlflow.example:8443/prefix/health"
    assert headers == {"Authorization": "Basic " + base64.b64encode(b"bob:pw").decode()}


def test_command_tag_has_no_password():
    tags = run_tags(["vidablate", "ablate", "tracking_uri=http://alice:s3cret@host:5000"])
    assert "s3cret" not in tags["vidablate.command"]
    assert "alice:***@host:5000" in tags["vidablate.command"]
