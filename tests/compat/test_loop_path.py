"""The request path served on the event loop (docs/architecture.md, "The loop path"): OpenAI Chat
Completions and Anthropic Messages calls to HTTP providers of the same format, from a cached key. Each test warms the key first,
so that the call under test takes that path rather than the router's; the compatibility suite checks
the answers themselves, this file the edges that belong to the path: a client leaving mid-stream,
heartbeats while the provider is slow, and descriptors after both."""

import json
import os
import socket
import time
import urllib.request

import httpx2 as httpx
import pytest

from conftest import create_key, start_gateway, start_mock, write_config

ROUTING = """routing:
  timeouts: {connect: 2s, first_byte: 5s, idle: 10s}
  retries: 1
  heartbeat: 300ms
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("loop")
    mock = start_mock(workdir)
    config = write_config(workdir, mock.url, routing=ROUTING)
    key = create_key(workdir, config)["key"]
    gateway = start_gateway(workdir, config)
    # The first call with a key goes through the router, which caches the key.
    warm(gateway.url, key)
    yield {"url": gateway.url, "key": key, "mock": mock, "pid": gateway.popen.pid}
    assert gateway.stop() == 0
    mock.stop()


def warm(url: str, key: str) -> None:
    r = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=10,
                   json={"model": "gpt-5.1", "messages": [{"role": "user", "content": "warm"}]})
    assert r.status_code == 200


def stats(gw) -> dict:
    with urllib.request.urlopen(gw["mock"].url + "/mock/stats") as r:
        return json.load(r)


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def half_open(gateway_port: int, client_port: int) -> bool:
    """Whether the gateway's end of the connection from `client_port` is still open after the client
    closed its end (CLOSE_WAIT in /proc/net/tcp)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if int(local.rsplit(":", 1)[1], 16) == gateway_port and int(remote.rsplit(":", 1)[1], 16) == client_port and state == "08":
                return True
    return False


def wait_until(check, timeout: float = 10.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def stream_request(gw, content: str, api: str, model: str) -> bytes:
    if api == "openai":
        path = "/v1/chat/completions"
        body = json.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": content}]}).encode()
    else:
        # Claude Code's own path, query and headers.
        path = "/v1/messages?beta=true"
        body = json.dumps({"model": model, "max_tokens": 256, "stream": True,
                           "messages": [{"role": "user", "content": content}]}).encode()
    host = gw["url"].removeprefix("http://")
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {gw['key']}\r\n"
            "anthropic-version: 2023-06-01\r\nanthropic-beta: fine-grained-tool-streaming-2025-05-14\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


# Same format, and translated both ways (gpt-5.1 is an OpenAI-format provider, claude-up an Anthropic one).
@pytest.mark.parametrize("api,model", [("openai", "gpt-5.1"), ("anthropic", "claude-up"), ("openai", "claude-up"), ("anthropic", "gpt-5.1")])
@pytest.mark.parametrize("how", ["close", "half-close"])
def test_a_client_leaving_mid_stream_stops_the_provider_and_frees_its_descriptors(gw, how, api, model):
    warm(gw["url"], gw["key"])
    before = descriptors(gw["pid"])
    cancelled = stats(gw)["streams_cancelled"]
    host, port = gw["url"].removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    client_port = s.getsockname()[1]
    s.sendall(stream_request(gw, "[[mock chunks=40 chunk_delay_ms=200]] a long answer", api, model))
    received = b""
    while b"data: " not in received:
        chunk = s.recv(65536)
        assert chunk, received
        received += chunk
    assert received.startswith(b"HTTP/1.1 200")
    if how == "half-close":
        s.shutdown(socket.SHUT_WR)
    else:
        s.close()
    # The provider's stream is cancelled (its connection closed) ...
    assert wait_until(lambda: stats(gw)["streams_cancelled"] == cancelled + 1), stats(gw)
    # ... and the gateway closes the client's connection too: nothing is left half-open.
    assert wait_until(lambda: not half_open(int(port), client_port))
    assert wait_until(lambda: descriptors(gw["pid"]) <= before), (before, descriptors(gw["pid"]))
    if how == "half-close":
        s.settimeout(5)
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
        assert b"data: [DONE]" not in rest and b"message_stop" not in rest  # cut, not finished
        s.close()


def test_anthropic_streams_get_ping_events_and_the_provider_gets_the_clients_headers(gw):
    warm(gw["url"], gw["key"])
    r = httpx.post(f"{gw['url']}/v1/messages?beta=true", timeout=30,
                   headers={"x-api-key": gw["key"], "anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking-2025-05-14"},
                   json={"model": "claude-up", "max_tokens": 256, "stream": True,
                         "messages": [{"role": "user", "content": "[[mock delay_ms=1000]] say something"}]})
    assert r.status_code == 200 and r.headers["request-id"] == r.headers["x-request-id"]
    assert r.text.startswith("event: ping\n") and "event: message_stop" in r.text
    with urllib.request.urlopen(gw["mock"].url + "/mock/requests?limit=1") as resp:
        last = json.load(resp)[-1]
    headers = {k.lower(): v for k, v in last["headers"].items()}
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14" and headers["x-api-key"] == "upstream-secret"


def test_a_slow_provider_gets_heartbeats_then_the_stream(gw):
    warm(gw["url"], gw["key"])
    r = httpx.post(f"{gw['url']}/v1/chat/completions", headers={"authorization": f"Bearer {gw['key']}"}, timeout=30,
                   json={"model": "gpt-5.1", "stream": True,
                         "messages": [{"role": "user", "content": "[[mock delay_ms=1500]] say something"}]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.startswith(": ping\n\n") and r.text.count(": ping\n\n") >= 2
    assert "data: [DONE]" in r.text
    assert r.headers["x-request-id"]


def test_a_slow_provider_that_fails_after_heartbeats_ends_with_an_error_event(gw):
    warm(gw["url"], gw["key"])
    r = httpx.post(f"{gw['url']}/v1/chat/completions", headers={"authorization": f"Bearer {gw['key']}"}, timeout=30,
                   json={"model": "gpt-5.1", "stream": True,
                         "messages": [{"role": "user", "content": "[[mock delay_ms=1000 status=400]] fail"}]})
    assert r.status_code == 200 and r.text.startswith(": ping\n\n")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events and "error" in events[-1], r.text


def test_non_streamed_answers_carry_every_header(gw):
    warm(gw["url"], gw["key"])
    r = httpx.post(f"{gw['url']}/v1/chat/completions", headers={"authorization": f"Bearer {gw['key']}", "x-request-id": "loop-1"},
                   timeout=10, json={"model": "gpt-5.1", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "loop-1"
    assert r.headers["content-length"] == str(len(r.content))
    assert "date" in r.headers and r.headers["content-type"] == "application/json"
    assert r.json()["model"] == "gpt-5.1"
