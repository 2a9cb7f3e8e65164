"""The gateway's HTTP/1.1 connection handling, byte by byte on raw sockets: pipelined requests answered
in order, `Connection: close`, a half-closed client, malformed requests, oversized bodies on a
keep-alive connection, the idle timeout (which spares a request being answered), and HTTP/1.0 clients."""

import json
import socket
import time

import pytest

from conftest import create_key, start_gateway, start_mock, write_config


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("http")
    mock = start_mock(workdir, "--chunks", "3")
    config = write_config(workdir, mock.url, server="  idle_timeout: 1s")
    key = create_key(workdir, config)["key"]
    gateway = start_gateway(workdir, config)
    host, port = gateway.url.removeprefix("http://").split(":")
    yield {"addr": (host, int(port)), "key": key}
    assert gateway.stop() == 0
    mock.stop()


def connect(gw) -> socket.socket:
    s = socket.create_connection(gw["addr"], timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def chat(gw, content="hi", stream=False, extra_headers="", version="1.1") -> bytes:
    body = json.dumps({"model": "gpt-5.1", "stream": stream, "messages": [{"role": "user", "content": content}]}).encode()
    head = (f"POST /v1/chat/completions HTTP/{version}\r\nHost: gw\r\nAuthorization: Bearer {gw['key']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra_headers}\r\n")
    return head.encode() + body


class Reader:
    """Reads HTTP/1.1 responses off a socket, one at a time."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            assert self._fill(), "connection closed mid-response"
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            assert self._fill(), "connection closed mid-body"
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self) -> tuple[int, dict, bytes]:
        status = int(self._line().split()[1])
        headers = {}
        while (line := self._line()):
            name, value = line.decode().split(":", 1)
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            return status, headers, self._take(int(headers["content-length"]))
        body = b""
        if headers.get("transfer-encoding") == "chunked":
            while (size := int(self._line(), 16)):
                body += self._take(size)
                self._take(2)
            self._line()
        return status, headers, body

    def closed(self, timeout: float = 5) -> bool:
        """Whether the server closes the connection with nothing more to say."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b"" and not self.buf
        except (TimeoutError, socket.timeout):
            return False
        except ConnectionResetError:
            return True


def test_pipelined_requests_are_answered_in_order(gw):
    s = connect(gw)
    # Three requests in one write; the second is a stream, so answers of both kinds must keep their order.
    s.sendall(chat(gw, "first") + chat(gw, "second", stream=True) + b"GET /health/live HTTP/1.1\r\nHost: gw\r\n\r\n")
    r = Reader(s)
    status1, _, body1 = r.response()
    status2, headers2, body2 = r.response()
    status3, _, body3 = r.response()
    assert (status1, status2, status3) == (200, 200, 200)
    assert json.loads(body1)["object"] == "chat.completion"
    assert headers2["content-type"].startswith("text/event-stream") and body2.rstrip().endswith(b"data: [DONE]")
    assert json.loads(body3) == {"status": "ok"}
    # Still open for more.
    s.sendall(b"GET /health/live HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert r.response()[0] == 200
    s.close()


def test_connection_close_ends_the_connection_after_the_answer(gw):
    s = connect(gw)
    s.sendall(chat(gw, extra_headers="Connection: close\r\n"))
    r = Reader(s)
    status, headers, _ = r.response()
    assert status == 200 and headers["connection"] == "close"
    assert r.closed()


def test_http10_without_keep_alive_ends_the_connection_after_the_answer(gw):
    s = connect(gw)
    s.sendall(chat(gw, version="1.0"))
    r = Reader(s)
    status, headers, body = r.response()
    assert status == 200 and json.loads(body)["object"] == "chat.completion"
    assert headers["connection"] == "close"
    assert r.closed()


def test_http10_with_keep_alive_keeps_the_connection_and_is_told_so(gw):
    s = connect(gw)
    r = Reader(s)
    for _ in range(2):
        s.sendall(chat(gw, version="1.0", extra_headers="Connection: keep-alive\r\n"))
        status, headers, _ = r.response()
        assert status == 200 and headers["connection"] == "keep-alive"
    s.close()


def test_a_stream_to_an_http10_client_is_unframed_and_ends_with_the_connection(gw):
    # HTTP/1.0 knows no chunked coding: the events come as they are, and the connection's end ends them.
    s = connect(gw)
    s.sendall(chat(gw, stream=True, version="1.0", extra_headers="Connection: keep-alive\r\n"))
    s.settimeout(10)
    data = b""
    while (chunk := s.recv(65536)):
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().lower().split("\r\n")
    assert lines[0].startswith("http/1.1 200")
    assert "connection: close" in lines and not any(line.startswith("transfer-encoding") for line in lines)
    assert body.startswith(b"data: {") and body.rstrip().endswith(b"data: [DONE]")


def closing_request_for_a_large_answer(gw) -> socket.socket:
    """A `Connection: close` request whose answer (~12 MB) is far more than the sockets take at once,
    from a client with a small receive window."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)  # before connecting: a small window
    s.settimeout(10)
    s.connect(gw["addr"])
    s.sendall(chat(gw, "[[mock words=2000000]] big", extra_headers="Connection: close\r\n"))
    return s


def test_a_closing_connection_gives_a_slow_reader_its_whole_answer(gw):
    # A close discards what the socket has not taken yet: the gateway closes once the answer is written.
    s = closing_request_for_a_large_answer(gw)
    time.sleep(0.3)
    r = Reader(s)
    status, headers, body = r.response()
    assert status == 200 and len(body) == int(headers["content-length"]) > 8_000_000
    assert json.loads(body)["usage"]["completion_tokens"] == 2_000_000
    assert r.closed()


def test_a_closing_connection_whose_client_stops_reading_ends_after_the_idle_timeout(gw):
    # Waiting for the answer to be written is bounded by the idle timeout (1 s here).
    s = closing_request_for_a_large_answer(gw)
    time.sleep(4)
    with pytest.raises(AssertionError, match="closed mid-body"):
        Reader(s).response()


def test_a_half_closed_client_gets_its_answer_then_the_connection_ends(gw):
    # (A model call on a half-closed connection is the client leaving: the gateway cancels it. Other
    # requests are answered.)
    s = connect(gw)
    s.sendall(b"GET /health/live HTTP/1.1\r\nHost: gw\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    r = Reader(s)
    assert r.response()[0] == 200
    assert r.closed()


def test_a_malformed_request_gets_400_and_the_connection_closes(gw):
    s = connect(gw)
    s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
    r = Reader(s)
    status, headers, _ = r.response()
    assert status == 400 and headers.get("connection") == "close"
    assert r.closed()


def test_a_malformed_request_after_a_good_one_is_refused_after_its_answer(gw):
    s = connect(gw)
    s.sendall(chat(gw, "ok") + b"\x00\x01 garbage\r\n\r\n")
    r = Reader(s)
    assert r.response()[0] == 200
    assert r.response()[0] == 400
    assert r.closed()


def test_an_oversized_body_gets_413_and_the_connection_stays_usable(gw):
    s = connect(gw)
    big = json.dumps({"model": "gpt-5.1", "messages": [{"role": "user", "content": "x" * 100_000}]}).encode()
    # Chunked, so the size is only known once it has been read (the limit is 64 KB).
    chunks = b"".join(f"{len(big[i:i + 8192]):x}\r\n".encode() + big[i:i + 8192] + b"\r\n" for i in range(0, len(big), 8192))
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {gw['key']}\r\n"
              "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunks + b"0\r\n\r\n")
    r = Reader(s)
    status, _, body = r.response()
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    s.sendall(chat(gw, "after"))
    assert r.response()[0] == 200
    s.close()


def test_an_idle_connection_is_closed_but_a_long_answer_is_not(gw):
    s = connect(gw)
    r = Reader(s)
    # A stream lasting 2.5 s, longer than the 1 s idle timeout: it is being answered, so it is not idle.
    s.sendall(chat(gw, "[[mock chunks=5 chunk_delay_ms=500]] long", stream=True))
    status, _, body = r.response()
    assert status == 200 and body.rstrip().endswith(b"data: [DONE]")
    started = time.monotonic()
    assert r.closed(timeout=5)
    assert 0.5 < time.monotonic() - started < 3
