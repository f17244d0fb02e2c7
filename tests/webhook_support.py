"""A real HTTP receiver on loopback for webhook tests: it records every request it gets
and answers what the test tells it to (a status, a redirect, a slow or a huge body)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_certificate(directory, host: str) -> tuple[str, str]:
    """A self-signed certificate for `host` (openssl), as (certificate, key) paths."""
    import subprocess

    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", key, "-out", cert, "-subj", f"/CN={host}",
         "-addext", f"subjectAltName=DNS:{host}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def start_receiver(port: int = 0, tls: tuple[str, str] | None = None) -> Receiver:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            receiver.requests.append(
                Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                )
            )
            if receiver.delay:
                time.sleep(receiver.delay)
            self.send_response(receiver.status)
            for name, value in receiver.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(receiver.body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(receiver.body)

        do_GET = do_POST  # noqa: N815 - a followed redirect would arrive as a GET

        def log_message(self, *args):  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    if tls:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    receiver = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver


@dataclass
class Trickler:
    """A receiver that reads the request, then answers `payload` one byte every `interval`
    seconds (for at most `for_seconds`): each read gets a byte in time, the whole never."""

    server: socket.socket
    connections: int = 0

    @property
    def port(self) -> int:
        return self.server.getsockname()[1]

    def url(self, path: str = "/hook", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.close()


def start_trickler(payload: bytes, interval: float = 0.5, for_seconds: float = 20) -> Trickler:
    server = socket.create_server(("127.0.0.1", 0))
    trickler = Trickler(server)

    def answer(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(1)
            with contextlib.suppress(OSError):
                conn.recv(65536)  # the request (a TLS ClientHello for https), read or not
            ends = time.monotonic() + for_seconds
            for byte in payload:
                if time.monotonic() > ends:
                    break
                conn.sendall(bytes([byte]))
                time.sleep(interval)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                trickler.connections += 1
                threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return trickler
