"""FaultInjectingEndpoint: a FAKE OpenAI-compatible endpoint, for faults a real server can't show.

It misbehaves on `faults` chat requests, the first ones or those after the first `after` (HTTP 500, a hang past the client's timeout, a
dropped connection, an HTML page, a JSON body without `choices`, HTTP 401 as from a gateway
that wants a key, or HTTP 429 with a `Retry-After` header, as from a rate-limited API; or it rewrites the real server's answer: the reasoning trace under the older
field name `reasoning_content`, or a trace whose close tag never came although
`finish_reason` says `stop`) and then answers properly by forwarding the request to a real vLLM server
(`upstream`), so the completions the pipeline stores are still real ones. Only the fault is fake.
`GET /v1/models` and `/health` are forwarded too, except in `401` and `html` modes, where every
request gets the fault (a gateway in front of everything).

`upstream_key` stands in for an authenticating proxy: requests go upstream with that key as a
Bearer token, whatever credentials the client sent; `seen_auth` records what clients sent.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import typing
import urllib.error
import urllib.request
from typing import Literal

Mode = Literal[
    "500", "hang", "drop", "html", "no_choices", "401", "reasoning_content", "no_close_tag", "429"
]
REWRITES = ("reasoning_content", "no_close_tag")  # the real answer, one field changed


def _rename_reasoning(data: dict) -> dict:
    """As servers before vLLM's rename (and some others) send it: `reasoning_content`."""
    for c in data.get("choices", []):
        m = c.get("message") or {}
        if "reasoning" in m:
            m["reasoning_content"] = m.pop("reasoning")
    return data


def _drop_close_tag(data: dict) -> dict:
    """The trace never closed, yet `finish_reason` is `stop`: a server's parser then puts the
    whole text in the reasoning field; inline, the close tag is simply missing."""
    for c in data.get("choices", []):
        m = c.get("message") or {}
        if isinstance(m.get("reasoning"), str):
            m["reasoning"] += m.get("content") or ""
            m["content"] = None
        else:
            m["content"] = (m.get("content") or "").replace("</think>", "")
        c["finish_reason"] = "stop"
    return data


class FaultInjectingEndpoint:
    """Run with `with FaultInjectingEndpoint(upstream_url, mode, faults=K) as fake: fake.url`."""

    def __init__(
        self,
        upstream: str,
        mode: Mode,
        *,
        faults: int = 3,
        after: int = 0,
        hang_s: float = 5.0,
        upstream_key: str = "",
        retry_after: str = "1",
    ):
        if mode not in typing.get_args(Mode):
            raise ValueError(f"unknown fault mode {mode!r}")
        self.upstream = upstream.rstrip("/")
        self.upstream_key = upstream_key
        self.seen_auth: list[str] = []
        self.mode = mode
        self.faults = faults
        self.after = after  # chat requests answered properly before the faults start
        self.hang_s = hang_s
        self.retry_after = retry_after  # mode 429: the header: seconds, or "date+N" (an HTTP date)
        self.arrivals: list[tuple[float, bool]] = []  # (monotonic time, faulted) per chat POST
        self.chat_requests = 0  # every POST /chat/completions seen
        self.faults_injected = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FaultInjectingEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def retry_after_value(self) -> str:
        """The Retry-After header: as given, or for "date+N" the HTTP date N seconds from now
        (whole seconds: N-1 to N seconds of wait)."""
        if not self.retry_after.startswith("date+"):
            return self.retry_after
        from datetime import UTC, datetime, timedelta
        from email.utils import format_datetime

        when = datetime.now(UTC) + timedelta(seconds=float(self.retry_after[5:]))
        return format_datetime(when, usegmt=True)

    def _take_fault(self) -> bool:
        with self._lock:
            self.chat_requests += 1
            fault = self.chat_requests > self.after and self.faults_injected < self.faults
            self.arrivals.append((time.monotonic(), fault))
            if fault:
                self.faults_injected += 1
                return True
            self.forwarded += 1
            return False

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _forward(self, method: str, body: bytes | None, rewrite=None) -> None:
                path = self.path[len("/v1") :] if self.path.startswith("/v1") else self.path
                headers = {"Content-Type": "application/json"}
                if fake.upstream_key:
                    headers["Authorization"] = f"Bearer {fake.upstream_key}"
                req = urllib.request.Request(
                    fake.upstream + path, data=body, method=method, headers=headers
                )
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        status, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, data = e.code, e.read()
                if rewrite is not None and status == 200:
                    data = json.dumps(rewrite(json.loads(data))).encode()
                self._send(status, data)

            def _send(self, status: int, data: bytes, extra: dict | None = None) -> None:
                self.send_response(status)
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # the name http.server calls
                fake.seen_auth.append(self.headers.get("Authorization", ""))
                if self.path == "/health":
                    self._send(200, b"")
                    return
                if fake.mode in ("401", "html") and fake._take_fault():
                    self._fault()
                    return
                self._forward("GET", None)

            def do_POST(self) -> None:  # the name http.server calls
                fake.seen_auth.append(self.headers.get("Authorization", ""))
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if not self.path.endswith("/chat/completions") or not fake._take_fault():
                    self._forward("POST", body)
                    return
                if fake.mode in REWRITES:
                    rewrite = _rename_reasoning if fake.mode == "reasoning_content" else None
                    self._forward("POST", body, rewrite or _drop_close_tag)
                    return
                self._fault()

            def _fault(self) -> None:
                if fake.mode == "401":
                    self._send(401, b'{"error": "Unauthorized"}')
                elif fake.mode == "html":
                    self._send(200, b"<html><body>Bad gateway</body></html>")
                elif fake.mode == "no_choices":
                    self._send(200, b'{"object": "chat.completion", "model": "x"}')
                elif fake.mode == "429":
                    err = b'{"error": {"message": "rate limit", "type": "rate_limit_exceeded"}}'
                    self._send(429, err, {"Retry-After": fake.retry_after_value()})
                elif fake.mode == "500":
                    err = {"error": {"message": "injected fault", "type": "InternalServerError"}}
                    self._send(500, json.dumps(err).encode())
                elif fake.mode == "hang":
                    time.sleep(fake.hang_s)  # the client times out long before this
                    self.close_connection = True
                else:  # drop: close the socket without a byte of response
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

        return Handler
