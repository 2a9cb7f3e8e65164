"""Fixtures that start the real `switchyard` binary and its mock upstream on free loopback ports.

The binary comes from $SWITCHYARD_BIN, or the debug build folder. Process output goes to files in a
temporary directory (logs would otherwise fill a pipe and block the process); on failure the logs are
printed by the `process_logs` fixture's finalizer.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "sy-admin-compat-0123456789abcdef"


def binary() -> str:
    path = os.environ.get("SWITCHYARD_BIN") or str(ROOT / ".build" / "debug" / "switchyard")
    if not Path(path).exists():
        pytest.exit(f"switchyard binary not found at {path}: run `swift build` or set SWITCHYARD_BIN", 2)
    return path


@dataclass
class Proc:
    """A running switchyard process."""

    popen: subprocess.Popen
    stdout: Path
    stderr: Path
    url: str = ""

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.stdout.read_text() if self.stdout.exists() else ""
            m = re.search(pattern, text)
            if m:
                return m
            if self.popen.poll() is not None:
                raise RuntimeError(f"process exited with {self.popen.returncode}:\n{self.stderr.read_text()}")
            time.sleep(0.02)
        raise TimeoutError(f"no match for {pattern!r} in output:\n{self.stdout.read_text()}\n{self.stderr.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def logs(self) -> str:
        return self.stderr.read_text() if self.stderr.exists() else ""


def start(args: list[str], workdir: Path, name: str, env: dict | None = None) -> Proc:
    out, err = workdir / f"{name}.out", workdir / f"{name}.err"
    popen = subprocess.Popen(
        [binary(), *args],
        cwd=workdir,
        stdout=out.open("w"),
        stderr=err.open("w"),
        env={**os.environ, **(env or {})},
    )
    return Proc(popen, out, err)


def run_cli(args: list[str], workdir: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([binary(), *args], cwd=workdir, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"switchyard {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def start_mock(workdir: Path, *extra: str, name: str = "mock") -> Proc:
    proc = start(["mock-upstream", "--port", "0", *extra], workdir, name)
    proc.url = proc.wait_for(r"listening on (http://\S+)").group(1)
    return proc


# One retry, and no waiting out a provider's retry-after: the error-format tests see the provider's
# own error promptly (tests/compat/test_routing.py and the Swift routing tests cover retries).
ROUTING = """routing:
  timeouts: {connect: 2s, first_byte: 2s, idle: 10s}
  retries: 1
  max_retry_wait: 1s
"""


def write_config(workdir: Path, mock_url: str, name: str = "switchyard.yaml", extra: str = "", listen: str = "127.0.0.1:0",
                 server: str = "", routing: str = ROUTING) -> Path:
    path = workdir / name
    path.write_text(
        f"""
listen: "{listen}"
database: "sqlite:{workdir / 'switchyard.db'}"
admin_key: "${{COMPAT_ADMIN_KEY:-{ADMIN_KEY}}}"
path_prefixes: ["/api/proxy"]
providers:
  - name: upstream
    type: openai
    base_url: "{mock_url}/v1"
    api_key: "upstream-secret"
  - name: dead
    type: openai
    base_url: "http://127.0.0.1:1/v1"
  - name: builtin
    type: mock
  - name: ant
    type: anthropic
    base_url: "{mock_url}"
    api_key: "upstream-secret"
  - name: gem
    type: gemini
    base_url: "{mock_url}"
    api_key: "upstream-secret"
  - name: oai-responses
    type: openai-responses
    base_url: "{mock_url}/v1"
    api_key: "upstream-secret"
models:
  - name: gpt-5.1
    provider: upstream
    upstream: mock-gpt-5.1-2025
  - name: dead-model
    provider: dead
  - name: demo-mock
    provider: builtin
  - name: claude-up
    provider: ant
    upstream: claude-sonnet-4-6
  - name: gemini-up
    provider: gem
    upstream: gemini-3.1-pro
  - name: gpt-5.3-codex
    provider: oai-responses
    upstream: gpt-5.3-codex-2026
  - name: claude-up-thinking
    provider: ant
    upstream: claude-sonnet-4-6
    thinking: {{budget_tokens: 2048}}
  - name: "claude-haiku-*"
    provider: ant
media:
  allow_private_networks: true
{routing}
limits:
  max_body_size: 64KB
server:
  drain_timeout: 20s
{server}
{extra}
"""
    )
    return path


def start_gateway(workdir: Path, config: Path, name: str = "gateway") -> Proc:
    proc = start(["serve", "--config", str(config)], workdir, name)
    proc.url = proc.wait_for(r"listening on (http://\S+)").group(1)
    return proc


def create_key(workdir: Path, config: Path, name: str = "compat") -> dict:
    result = run_cli(["keys", "create", "--config", str(config), "--name", name, "--json"], workdir)
    return json.loads(result.stdout)


@dataclass
class Stack:
    """The gateway in front of the mock upstream, with a client key."""

    workdir: Path
    config: Path
    mock: Proc
    gateway: Proc
    key: str
    key_id: str
    extra: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.gateway.url + "/v1"

    def mock_stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.mock.url + "/mock/stats") as r:
            return json.load(r)

    def last_upstream_request(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.mock.url + "/mock/requests?limit=1") as r:
            return json.load(r)[-1]


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    workdir = tmp_path_factory.mktemp("stack")
    mock = start_mock(workdir, "--chunks", "6")
    config = write_config(workdir, mock.url)
    key = create_key(workdir, config)
    gateway = start_gateway(workdir, config)
    yield Stack(workdir, config, mock, gateway, key["key"], key["id"])
    code = gateway.stop()
    mock.stop()
    assert code == 0, f"gateway exited with {code}:\n{gateway.logs()}"


@pytest.fixture()
def client(stack):
    from openai import OpenAI

    with OpenAI(base_url=stack.base_url, api_key=stack.key, max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture()
def anthropic_client(stack):
    import anthropic

    with anthropic.Anthropic(base_url=stack.gateway.url, api_key=stack.key, max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture()
def genai_client(stack):
    from google import genai

    c = genai.Client(api_key=stack.key, http_options={"base_url": stack.gateway.url, "timeout": 30_000, "retry_options": {"attempts": 1}})
    yield c
    c.close()


PLANS = """
plans:
  - name: free
    models: ["demo-mock", "gpt-5.1"]
    requests_per_minute: 1000
    requests_per_day: 100000
    concurrent_requests: 20
  - name: pro
    models: ["*"]
    requests_per_minute: 6000
    concurrent_requests: 50
    tokens_per_minute: 10000000
default_plan: free
"""


def clear_of_utc_midnight(margin: float = 60) -> None:
    """Waits out the UTC day's last `margin` seconds: a test that counts requests per day must not see
    the count reset halfway through."""
    left = 86400 - time.time() % 86400
    if left < margin:
        time.sleep(left + 1)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin(base_url: str, method: str, path: str, body: dict | None = None, key: str = ADMIN_KEY) -> tuple[int, dict, dict]:
    """Calls the admin API; returns (status, headers, JSON body)."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base_url + "/admin/v1" + path, data=data, method=method,
                                 headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


@dataclass
class AccountsStack:
    """A gateway with plans on a fixed port (so the CLI can notify it), in front of the mock."""

    workdir: Path
    config: Path
    mock: Proc
    gateway: Proc

    @property
    def url(self) -> str:
        return self.gateway.url

    def admin(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, dict]:
        return admin(self.url, method, path, body)

    def key(self, user: str, **fields) -> dict:
        status, _, created = self.admin("POST", "/keys", {"name": "t", "user": user, **fields})
        assert status == 201, created
        return created


@pytest.fixture(scope="module")
def accounts(tmp_path_factory) -> AccountsStack:
    workdir = tmp_path_factory.mktemp("accounts")
    mock = start_mock(workdir)
    # A poll interval far longer than any test: a CLI change that shows at once was announced by the CLI.
    config = write_config(workdir, mock.url, extra=PLANS, listen=f"127.0.0.1:{free_port()}", server="  auth_poll_interval: 1h")
    gateway = start_gateway(workdir, config)
    yield AccountsStack(workdir, config, mock, gateway)
    code = gateway.stop()
    mock.stop()
    assert code == 0, f"gateway exited with {code}:\n{gateway.logs()}"
