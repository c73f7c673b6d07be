"""A real webhook receiver on 127.0.0.1 for the delivery tests: answers from a script
(500, 429 with Retry-After, 400...) then 200, checks Standard Webhooks signatures, and
deduplicates by idempotency key as a receiver should."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    at: float  # time.monotonic() on arrival

    @property
    def key(self) -> str:
        return self.headers["idempotency-key"]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Receiver:
    """Every request is recorded; the first answers come from `script`, then 200."""

    def __init__(self, secret: str | None = SECRET) -> None:
        self.secret = secret
        self.script: deque[Answer] = deque()
        self.script_for: dict[str, deque[Answer]] = {}  # by idempotency key, first
        self.requests: list[Received] = []
        self.accepted: Counter[str] = Counter()  # idempotency key -> 2xx answers it got
        self.duplicates: Counter[str] = Counter()  # re-sent after being accepted (deduped)
        self.bad_signatures = 0
        self.lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/pulse"

    def answer(self, *answers: Answer) -> None:
        with self.lock:
            self.script.extend(answers)

    def answer_for(self, key: str, *answers: Answer) -> None:
        """Answers for requests under one idempotency key only (before `script`)."""
        with self.lock:
            self.script_for.setdefault(key, deque()).extend(answers)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = receiver._decide(headers, body)
                receiver._record(
                    Received(self.path, headers, body, answer.status, time.monotonic())
                )
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: the port refuses connections until `start()` binds it again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _decide(self, headers: dict[str, str], body: bytes) -> Answer:
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
            except WebhookVerificationError as exc:
                with self.lock:
                    self.bad_signatures += 1
                return Answer(401, body=str(exc).encode())
        with self.lock:
            own = self.script_for.get(headers.get("idempotency-key", ""))
            if own:
                return own.popleft()
            if self.script:
                return self.script.popleft()
        return Answer(200)

    def _record(self, received: Received) -> None:
        with self.lock:
            self.requests.append(received)
            if 200 <= received.answered < 300:
                key = received.key
                if self.accepted[key]:
                    self.duplicates[key] += 1
                else:
                    self.accepted[key] += 1

    def bodies(self) -> list[Any]:
        with self.lock:
            return [r.json() for r in self.requests if 200 <= r.answered < 300]
