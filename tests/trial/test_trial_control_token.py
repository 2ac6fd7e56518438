"""The control client as an operator meets it when the token given is the wrong one."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from aiohttp.test_utils import TestClient, TestServer

from runtime.control import views
from runtime.control.client import ControlClient
from runtime.control.server import build_app


class _NeedsToken(BaseHTTPRequestHandler):
    """Answers every request as `callflow run --control-token T` does to a wrong token (server.py)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"error": "this control endpoint needs its token: Authorization: Bearer TOKEN"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server_with_a_token() -> Iterator[str]:
    httpd = HTTPServer(("127.0.0.1", 0), _NeedsToken)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_a_wrong_token_is_reported_as_refused_not_as_missing(server_with_a_token: str) -> None:
    client = ControlClient(server_with_a_token, token="not-the-token")
    with pytest.raises(RuntimeError) as refused:
        client.get("/api/state")
    message = str(refused.value)
    assert "refused" in message or "wrong" in message or "does not match" in message, message


def test_no_token_at_all_is_reported_as_missing(server_with_a_token: str) -> None:
    client = ControlClient(server_with_a_token, token="")
    with pytest.raises(RuntimeError) as refused:
        client.get("/api/state")
    assert "wants its control token" in str(refused.value), refused.value


def _answers(token_given: str | None) -> tuple[int, str]:
    """What the endpoint of `callflow run --control-token right-token` answers to a request carrying
    `token_given` (None: no Authorization header)."""

    async def main() -> tuple[int, str]:
        app = build_app(views.ControlState(engine=None), token="right-token")
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            headers = {} if token_given is None else {"Authorization": f"Bearer {token_given}"}
            response = await client.get("/api/state", headers=headers)
            return response.status, (await response.json())["error"]

    return asyncio.run(main())


def test_the_server_logs_a_wrong_token_as_control_refused_without_its_text(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="callflow.control"):
        status, error = _answers("mistyped-secret")
    assert status == 401 and "refused the token" in error
    assert "event=control_refused ip=127.0.0.1 " in caplog.text and 'reason="wrong token"' in caplog.text
    assert "mistyped-secret" not in caplog.text


def test_the_server_logs_a_missing_token_as_control_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="callflow.control"):
        status, error = _answers(None)
    assert status == 401 and "needs its token" in error
    assert 'event=control_refused ip=127.0.0.1 reason="no token"' in caplog.text
