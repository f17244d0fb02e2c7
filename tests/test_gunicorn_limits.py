"""What gunicorn, with our gunicorn.conf.py, refuses before Keysmith sees a request, measured
at each boundary; docs/api.md states the same numbers (issue 19: it said 8,190 bytes for
the request line while gunicorn refused 4,100).

A request that reaches Keysmith is answered with an X-Request-Id; gunicorn's own refusals
(a short HTML page) have none.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hot_path_support import gunicorn

ROOT = Path(__file__).resolve().parent.parent
REQUEST_LINE = 4094  # bytes of "GET /path?query HTTP/1.1", without its CRLF
HEADER_LINE = 65534  # bytes of one "Name: value" line, without its CRLF
HEADER_FIELDS = 100  # header lines, Host included


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp / 'ks.db'}", "SECRET_KEY": "limits"}
    env.pop("REDIS_URL", None)
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    with gunicorn(env, "-w", "1", log_path=tmp / "server.log") as base:
        yield int(base.rsplit(":", 1)[1])


def _send(port: int, request: bytes) -> tuple[int, bytes]:
    """The status and head of gunicorn's answer to raw bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0]
    return int(head.split(b" ", 2)[1]), head.lower()


def _request(line: str, *headers: str) -> bytes:
    lines = [line, "Host: 127.0.0.1", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _line_of(size: int) -> str:
    head, tail = "GET /api/v1/whoami?q=", " HTTP/1.1"
    return head + "a" * (size - len(head) - len(tail)) + tail


def test_a_request_line_of_4094_bytes_reaches_keysmith_and_one_more_gets_414(port):
    status, head = _send(port, _request(_line_of(REQUEST_LINE)))
    assert status == 400 and b"x-request-id" in head  # Keysmith: q is no parameter of whoami
    status, head = _send(port, _request(_line_of(REQUEST_LINE + 1)))
    assert status == 414 and b"x-request-id" not in head and b"text/html" in head


def test_a_header_line_of_65534_bytes_reaches_keysmith_and_one_more_gets_431(port):
    def header(size: int) -> str:
        return "X-Big: " + "v" * (size - len("X-Big: "))

    status, head = _send(port, _request("GET /healthz HTTP/1.1", header(HEADER_LINE)))
    assert status == 200 and b"x-request-id" in head
    status, head = _send(port, _request("GET /healthz HTTP/1.1", header(HEADER_LINE + 1)))
    assert status == 431 and b"x-request-id" not in head


def test_100_header_lines_reach_keysmith_and_101_get_431(port):
    def extra(count: int) -> list[str]:  # besides Host and Connection
        return [f"X-H{i}: v" for i in range(count - 2)]

    status, head = _send(port, _request("GET /healthz HTTP/1.1", *extra(HEADER_FIELDS)))
    assert status == 200 and b"x-request-id" in head
    status, head = _send(port, _request("GET /healthz HTTP/1.1", *extra(HEADER_FIELDS + 1)))
    assert status == 431 and b"x-request-id" not in head


def test_a_control_character_in_a_header_gets_gunicorns_400(port):
    status, head = _send(port, _request("GET /healthz HTTP/1.1", "X-Bad: a\x01b"))
    assert status == 400 and b"x-request-id" not in head


def test_docs_api_md_states_the_measured_limits():
    text = " ".join((ROOT / "docs" / "api.md").read_text().split())
    for phrase in (
        f"request line over {REQUEST_LINE:,} bytes",
        f"header line over {HEADER_LINE:,} bytes",
        f"more than {HEADER_FIELDS} header lines",
    ):
        assert phrase in text, phrase
    assert "8,190" not in text
