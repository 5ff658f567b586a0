"""A loopback stand-in for an OpenAI-compatible HTTP server, for tests and benchmarks.

It speaks enough of ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` for the
real ``openai`` client to run end to end, and plays scripted answers: texts, logprobs,
delays, 429 with ``Retry-After``, 5xx, malformed bodies. Every request is logged.

Use it from pytest::

    from tests.helpers.openai_server import OpenAIStandin, Reply

    with OpenAIStandin(api_key="sk-test") as srv:
        srv.push(Reply.error(429, headers={"Retry-After": "0"}))   # first request: 429
        srv.push(Reply.chat("hello"))                              # second: an answer
        client = AsyncOpenAI(base_url=srv.base_url, api_key="sk-test")
        ...
        assert len(srv.requests) == 2

or in another process (so its threads do not share the client's GIL)::

    python -m tests.helpers.openai_server --latency 0.05     # prints {"base_url": ...}
    curl $BASE/_standin/stats                                 # {"requests": N, ...}

When the script queue is empty the server answers from a toy deterministic "model":

* chat: ``chat_text`` (default ``"ok"``); with ``logprobs`` requested, the answer is the
  toy model's most likely token after the last user message, with its top logprobs.
* completions: the toy model over a toy tokenizer (letters runs, single digits, other
  single characters, each with an optional leading space, plus the two-digit token "10").
  ``echo`` + ``logprobs`` returns prompt logprobs with ``completions_alignment``:
  ``"standard"`` (OpenAI / vLLM: entry i is the distribution of token i, entry 0 None),
  ``"shifted"`` (llama.cpp without BOS: entry i is the distribution of token i+1, entry
  0 None), ``"none"`` (``logprobs: null``) or ``"unsupported"`` (404 on /completions).

Fault injection:

* an outage: ``OpenAIStandin(fail_first=3)`` or ``srv.fail(3)`` answers the next 3 POST
  requests with HTTP 500 (``fail_status``), then recovers; ``srv.fail()`` fails every
  request until ``srv.recover()``;
* truncation: ``chat_finish_reason="length"`` answers every toy chat with finish_reason
  "length"; ``truncate_at_max_tokens=True`` cuts the toy chat text at the request's
  ``max_tokens`` (toy tokens) and then says "length", as a real server does.

Out of process, ``POST $BASE/_standin/control`` with a JSON object sets the same
options: ``{"fail": 3}`` (or ``null``: until recovered), ``{"fail_status": 503}``,
``{"recover": true}``, ``{"chat_finish_reason": "length"}``, ``{"chat_text": "..."}``,
``{"truncate_at_max_tokens": true}``; command-line flags ``--fail-first N``,
``--fail-status``, ``--finish-reason``, ``--chat-text``, ``--truncate``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["OpenAIStandin", "Reply", "toy_tokenize", "toy_logprobs", "TOY_VOCAB"]

# ----------------------------------------------------------------------------- toy model

TOY_VOCAB = [str(i) for i in range(11)] + [" the", " cat", " a", "\n", "\t", ".", " dog", "x"]
_TOKEN_RE = re.compile(r"10|[ ]?[A-Za-z]+|[ ]?\d|[ ]?[^\sA-Za-z\d]|\s")


def toy_tokenize(text: str) -> list[tuple[str, int]]:
    """Toy tokenizer: (token, char offset) pairs that cover ``text`` exactly."""
    return [(m.group(0), m.start()) for m in _TOKEN_RE.finditer(text)]


def toy_logprobs(prefix: str) -> dict[str, float]:
    """Deterministic next-token log-probabilities over TOY_VOCAB after ``prefix``."""
    digest = hashlib.sha256(prefix.encode("utf-8")).digest()
    logits = [(digest[i % len(digest)] / 255.0) * 6.0 for i in range(len(TOY_VOCAB))]
    m = max(logits)
    z = m + math.log(sum(math.exp(v - m) for v in logits))
    return {tok: v - z for tok, v in zip(TOY_VOCAB, logits)}


def _top(dist: dict[str, float], k: int) -> dict[str, float]:
    return dict(sorted(dist.items(), key=lambda kv: -kv[1])[: max(int(k), 0)])


def _count_tokens(text: str) -> int:
    return len(toy_tokenize(text))


# ----------------------------------------------------------------------------- replies


@dataclass
class Reply:
    """One scripted answer. ``json`` is sent as the body; ``body`` (raw text) wins over it."""

    status: int = 200
    json: Any = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float | None = None
    """Seconds to wait before answering (None: the server's ``latency``)."""
    path: str | None = None
    """Only consumed by a request whose path ends with this (e.g. "/completions")."""

    @classmethod
    def chat(
        cls,
        text: str | None,
        *,
        finish_reason: str = "stop",
        refusal: str | None = None,
        model: str = "standin-model",
        top_logprobs: list[dict[str, float]] | None = None,
        prompt_tokens: int = 10,
        completion_tokens: int | None = None,
        **kw: Any,
    ) -> "Reply":
        """A chat completion with ``text``; ``top_logprobs``: one dict per answer token."""
        logprobs = None
        if top_logprobs is not None:
            content = []
            for dist in top_logprobs:
                best = max(dist.items(), key=lambda kv: kv[1])
                content.append(_chat_token(best[0], best[1], dist))
            logprobs = {"content": content, "refusal": None}
        body = {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": refusal},
                    "logprobs": logprobs,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": _usage(prompt_tokens, completion_tokens if completion_tokens is not None
                            else _count_tokens(text or "")),
        }
        return cls(json=body, **kw)

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "error",
        *,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> "Reply":
        """An OpenAI-style error body with ``status``."""
        body = {"error": {"message": message, "type": type, "param": None, "code": code}}
        return cls(status=status, json=body, headers=headers or {}, **kw)

    @classmethod
    def raw(cls, body: str, status: int = 200, **kw: Any) -> "Reply":
        """A raw (e.g. malformed) body."""
        return cls(status=status, body=body, **kw)


def _usage(p: int, c: int) -> dict[str, int]:
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _chat_token(tok: str, lp: float, dist: dict[str, float]) -> dict[str, Any]:
    return {
        "token": tok,
        "logprob": lp,
        "bytes": list(tok.encode("utf-8")),
        "top_logprobs": [
            {"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))} for t, v in dist.items()
        ],
    }


# ----------------------------------------------------------------------------- server


class OpenAIStandin:
    """The stand-in server. Start with ``with OpenAIStandin() as srv`` or ``start()``/``stop()``.

    Attributes you may set at any time: ``latency`` (seconds per answer), ``api_key``
    (None: accept any), ``models`` (None: accept any), ``chat_text``, ``chat_logprobs``
    (bool), ``completions_alignment``, ``responder`` (``fn(request) -> Reply | None``,
    consulted when the script queue is empty), ``chat_finish_reason``,
    ``truncate_at_max_tokens``, ``fail_status``. Outages: :meth:`fail` / :meth:`recover`
    (``failed``: how many requests an outage answered).
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        api_key: str | None = None,
        models: set[str] | None = None,
        chat_text: str = "ok",
        chat_logprobs: bool = True,
        completions_alignment: str = "standard",
        host: str = "127.0.0.1",
        port: int = 0,
        fail_first: int = 0,
        fail_status: int = 500,
        chat_finish_reason: str = "stop",
        truncate_at_max_tokens: bool = False,
    ) -> None:
        self.latency = latency
        self.api_key = api_key
        self.models = models
        self.chat_text = chat_text
        self.chat_logprobs = chat_logprobs
        self.completions_alignment = completions_alignment
        self.chat_finish_reason = chat_finish_reason
        self.truncate_at_max_tokens = truncate_at_max_tokens
        self.fail_status = fail_status
        self._fail_left: int | None = int(fail_first)  # None: until recover()
        self.failed = 0
        self.responder: Callable[[dict[str, Any]], Reply | None] | None = None
        self.requests: list[dict[str, Any]] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0
        self._host, self._port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> "OpenAIStandin":
        handler = type("Handler", (_Handler,), {"standin": self})
        server_cls = type("Server", (_Server,), {})
        self._httpd = server_cls((self._host, self._port), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "OpenAIStandin":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, what the openai client takes as ``base_url``."""
        return f"http://{self._host}:{self.port}/v1"

    # -- script
    def push(self, *replies: Reply) -> None:
        """Queue replies, played in order to the next requests (one each)."""
        with self._lock:
            self._queue.extend(replies)

    def clear(self) -> None:
        """Forget queued replies and the request log."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.max_in_flight = 0

    def fail(self, count: int | None = None, status: int | None = None) -> None:
        """An outage: answer the next ``count`` POST requests (None: every one until
        :meth:`recover`) with HTTP ``status`` (default ``fail_status``, 500)."""
        with self._lock:
            self._fail_left = None if count is None else int(count)
            if status is not None:
                self.fail_status = int(status)

    def recover(self) -> None:
        """End an outage: answer normally again."""
        with self._lock:
            self._fail_left = 0

    def _outage(self) -> Reply | None:
        with self._lock:
            if self._fail_left is not None:
                if self._fail_left <= 0:
                    return None
                self._fail_left -= 1
            self.failed += 1
            status = self.fail_status
        return Reply.error(status, f"the stand-in is down (HTTP {status})",
                           type="server_error")

    def _control(self, body: Any) -> Reply:
        if not isinstance(body, dict):
            return Reply.error(400, "control body must be a JSON object", delay=0)
        if body.get("recover"):
            self.recover()
        if "fail" in body:
            self.fail(body["fail"], body.get("fail_status"))
        elif "fail_status" in body:
            self.fail_status = int(body["fail_status"])
        for name in ("chat_finish_reason", "chat_text", "truncate_at_max_tokens"):
            if name in body:
                setattr(self, name, body[name])
        with self._lock:
            left = self._fail_left
        return Reply(json={"fail_left": left, "failed": self.failed}, delay=0)

    def posts(self, path_suffix: str = "") -> list[dict[str, Any]]:
        """Logged POST requests whose path ends with ``path_suffix``."""
        with self._lock:
            return [r for r in self.requests if r["method"] == "POST"
                    and r["path"].endswith(path_suffix)]

    def _next_scripted(self, path: str) -> Reply | None:
        with self._lock:
            for i, reply in enumerate(self._queue):
                if reply.path is None or path.endswith(reply.path):
                    del self._queue[i]
                    return reply
        return None

    # -- answering
    def _answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> Reply:
        if method == "GET" and path.endswith("/_standin/stats"):
            with self._lock:
                stats = {"requests": sum(1 for r in self.requests if r["method"] == "POST"),
                         "max_in_flight": self.max_in_flight, "failed": self.failed}
            return Reply(json=stats, delay=0)
        if method == "POST" and path.endswith("/_standin/control"):
            return self._control(body)
        request = {"method": method, "path": path, "headers": headers, "json": body,
                   "time": time.time()}
        with self._lock:
            self.requests.append(request)
        if method == "POST":
            down = self._outage()
            if down is not None:
                return down
        if self.api_key is not None:
            auth = headers.get("authorization", "")
            if auth != f"Bearer {self.api_key}":
                given = auth.removeprefix("Bearer ")
                # Like some servers, echo the wrong key back (the client must redact it).
                return Reply.error(401, f"Incorrect API key provided: {given}.",
                                   code="invalid_api_key", delay=0)
        if method == "GET" and path.endswith("/models"):
            names = sorted(self.models or {"standin-model"})
            return Reply(json={"object": "list", "data": [
                {"id": n, "object": "model", "created": 0, "owned_by": "standin"} for n in names]})
        if not isinstance(body, dict):
            return Reply.error(400, "body is not a JSON object")
        model = body.get("model")
        if self.models is not None and model not in self.models:
            return Reply.error(404, f"The model `{model}` does not exist or you do not have "
                               "access to it.", code="model_not_found")
        scripted = self._next_scripted(path)
        if scripted is not None:
            return scripted
        if self.responder is not None:
            made = self.responder(request)
            if made is not None:
                return made
        if path.endswith("/chat/completions"):
            return self._toy_chat(body)
        if path.endswith("/completions"):
            return self._toy_completion(body)
        return Reply.error(404, f"no route {path}")

    def _toy_chat(self, body: dict[str, Any]) -> Reply:
        messages = body.get("messages") or []
        user = next((m.get("content") or "" for m in reversed(messages)
                     if m.get("role") == "user"), "")
        prompt_tokens = sum(_count_tokens(str(m.get("content") or "")) for m in messages)
        model = body.get("model") or "standin-model"
        if body.get("logprobs") and self.chat_logprobs:
            dist = _top(toy_logprobs(user), body.get("top_logprobs") or 1)
            best = max(dist.items(), key=lambda kv: kv[1])[0]
            return Reply.chat(best, model=model, top_logprobs=[dist],
                              prompt_tokens=prompt_tokens, completion_tokens=1)
        text, finish = self.chat_text, self.chat_finish_reason
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if self.truncate_at_max_tokens and limit is not None:
            toks = toy_tokenize(text or "")
            if len(toks) > int(limit):
                text, finish = "".join(t for t, _ in toks[: int(limit)]), "length"
        return Reply.chat(text, model=model, prompt_tokens=prompt_tokens,
                          finish_reason=finish)

    def _toy_completion(self, body: dict[str, Any]) -> Reply:
        align = self.completions_alignment
        if align == "unsupported":
            return Reply.error(404, "This is a chat model and not supported in the "
                               "v1/completions endpoint.", code=None)
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = prompt[0] if prompt else ""
        prompt = str(prompt or "")
        max_tokens = int(body.get("max_tokens") if body.get("max_tokens") is not None else 16)
        echo = bool(body.get("echo"))
        k = body.get("logprobs")
        # Greedy generation with the toy model.
        gen: list[str] = []
        text = prompt
        for _ in range(max_tokens):
            dist = toy_logprobs(text)
            tok = max(dist.items(), key=lambda kv: kv[1])[0]
            gen.append(tok)
            text += tok
        logprobs = None
        if k is not None and align != "none":
            toks = toy_tokenize(prompt) if echo else []
            all_tokens = [t for t, _ in toks]
            offsets = [o for _, o in toks]
            pos = len(prompt)
            for t in gen:
                all_tokens.append(t)
                offsets.append(pos)
                pos += len(t)
            tops: list[dict[str, float] | None] = []
            tlps: list[float | None] = []
            full = prompt + "".join(gen)
            for i, tok in enumerate(all_tokens):
                if align == "shifted" and echo:
                    prefix = full[: offsets[i] + len(tok)]   # distribution of token i+1
                else:
                    prefix = full[: offsets[i]]              # distribution of token i
                dist = toy_logprobs(prefix)
                top = _top(dist, int(k))
                top[tok] = dist.get(tok, -30.0)
                tops.append(top)
                tlps.append(dist.get(tok, -30.0))
            if echo and all_tokens:
                tops[0] = None
                tlps[0] = None
            logprobs = {"tokens": all_tokens, "text_offset": offsets, "token_logprobs": tlps,
                        "top_logprobs": tops}
        out = {
            "id": "cmpl-standin",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or "standin-model",
            "choices": [{"text": (prompt if echo else "") + "".join(gen), "index": 0,
                         "logprobs": logprobs, "finish_reason": "length"}],
            "usage": _usage(_count_tokens(prompt), len(gen)),
        }
        return Reply(json=out)


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # many clients connect at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the client gave up (e.g. its timeout): nothing to report
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    standin: OpenAIStandin
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _handle(self, method: str) -> None:
        srv = self.standin
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        with srv._lock:
            srv._in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv._in_flight)
        try:
            reply = srv._answer(method, self.path, headers, body)
            delay = srv.latency if reply.delay is None else reply.delay
            if delay:
                time.sleep(delay)
            if reply.body is not None:
                payload = reply.body.encode("utf-8")
            else:
                payload = json.dumps(reply.json).encode("utf-8")
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        finally:
            with srv._lock:
                srv._in_flight -= 1

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")


def main(argv: list[str] | None = None) -> None:
    """Run the stand-in in the foreground; prints ``{"base_url": ...}`` on one line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--alignment", default="standard")
    ap.add_argument("--fail-first", type=int, default=0,
                    help="answer the first N POST requests with --fail-status, then recover")
    ap.add_argument("--fail-status", type=int, default=500)
    ap.add_argument("--finish-reason", default="stop",
                    help="finish_reason of the toy chat answers (e.g. length)")
    ap.add_argument("--chat-text", default="ok", help="text of the toy chat answers")
    ap.add_argument("--truncate", action="store_true",
                    help="cut the toy chat text at the request's max_tokens (finish length)")
    args = ap.parse_args(argv)
    srv = OpenAIStandin(latency=args.latency, port=args.port, api_key=args.api_key,
                        completions_alignment=args.alignment, fail_first=args.fail_first,
                        fail_status=args.fail_status, chat_finish_reason=args.finish_reason,
                        chat_text=args.chat_text, truncate_at_max_tokens=args.truncate).start()
    print(json.dumps({"base_url": srv.base_url}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
