"""The `switchyard` command line and process lifecycle: keys, demo mode, config errors, SIGTERM drain."""
from __future__ import annotations

import fcntl
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
from openai import OpenAI

from conftest import Proc, binary, create_key, run_cli, start, start_gateway, start_mock, write_config

HELLO = [{"role": "user", "content": "Hello!"}]


GROUPS = [["keys"], ["users"], ["plans"]]


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["mock-upstream"], *GROUPS,
     *[["keys", c] for c in ["create", "list", "show", "rotate", "update", "revoke"]],
     *[["users", c] for c in ["create", "list", "show", "set-plan", "disable", "enable"]],
     ["plans", "list"]],
)
def test_every_command_has_help_and_config_option(command, tmp_path):
    result = run_cli([*command, "--help"], tmp_path)
    assert "USAGE" in result.stdout.upper()
    if command and command not in GROUPS:
        assert "--config" in result.stdout


def test_keys_create_list_revoke(stack, tmp_path):
    human = run_cli(["keys", "create", "--config", str(stack.config), "--name", "cli-human", "--user", "dev@example.com"], tmp_path)
    secret = human.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"sy-[0-9A-Za-z]{43}", secret), human.stdout

    created = json.loads(run_cli(["keys", "create", "--config", str(stack.config), "--name", "cli-json", "--json"], tmp_path).stdout)
    assert created["id"].startswith("key_") and created["key"].startswith("sy-")

    listed = json.loads(run_cli(["keys", "list", "--config", str(stack.config), "--json"], tmp_path).stdout)
    by_name = {k["name"]: k for k in listed}
    assert by_name["cli-human"]["user"] == "dev@example.com"
    assert by_name["cli-json"]["key_hint"] == "sy-…" + created["key"][-4:]
    assert secret not in json.dumps(listed) and created["key"] not in json.dumps(listed)  # secrets are never shown again
    table = run_cli(["keys", "list", "--config", str(stack.config)], tmp_path).stdout
    assert "ID" in table.splitlines()[0] and created["id"] in table

    # The running gateway accepts the new key, then stops accepting it once the CLI revokes it.
    with OpenAI(base_url=stack.base_url, api_key=created["key"], max_retries=0) as c:
        assert c.chat.completions.create(model="gpt-5.1", messages=HELLO).choices
        run_cli(["keys", "revoke", "--config", str(stack.config), created["id"]], tmp_path)
        deadline = time.time() + 3
        while True:
            try:
                c.chat.completions.create(model="gpt-5.1", messages=HELLO)
            except openai.AuthenticationError as e:
                assert "revoked" in e.message
                break
            assert time.time() < deadline, "revoked key still accepted"
            time.sleep(0.05)

    missing = run_cli(["keys", "revoke", "--config", str(stack.config), "key_doesnotexist"], tmp_path, check=False)
    assert missing.returncode != 0 and "no key with id" in missing.stderr


def test_config_errors_name_key_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('listen: "127.0.0.1:0"\nproviders:\n  - name: a\n    type: openai\n    base_url: "http://x"\n    api_kee: "k"\n')
    result = run_cli(["serve", "--config", str(bad)], tmp_path, check=False)
    assert result.returncode != 0
    assert "line 6" in result.stderr and "providers[0].api_kee" in result.stderr and "unknown key" in result.stderr

    wrong_type = tmp_path / "type.yaml"
    wrong_type.write_text("limits:\n  max_json_depth: lots\n")
    result = run_cli(["keys", "list", "--config", str(wrong_type)], tmp_path, check=False)
    assert result.returncode != 0 and "line 2" in result.stderr and "expected an integer" in result.stderr

    unset = tmp_path / "env.yaml"
    unset.write_text('admin_key: "${SWITCHYARD_TEST_UNSET_VAR}"\n')
    result = run_cli(["serve", "--config", str(unset)], tmp_path, check=False)
    assert result.returncode != 0 and "SWITCHYARD_TEST_UNSET_VAR" in result.stderr


def test_serve_without_config_explains_itself(tmp_path):
    result = subprocess.run([*_bin(), "serve"], cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=30)
    assert result.returncode != 0 and "--demo" in result.stderr


def _bin():
    from conftest import binary

    return [binary()]


def test_demo_mode_prints_a_working_key_and_curl_line(tmp_path):
    proc = start(["serve", "--demo", "--listen", "127.0.0.1:0"], tmp_path, "demo")
    try:
        url = proc.wait_for(r"listening on (http://\S+)").group(1)
        out = proc.wait_for(r"curl .*\n").string
        demo_key = re.search(r"demo key:\s+(\S+)", out).group(1)
        admin_key = re.search(r"admin key:\s+(\S+)", out).group(1)
        assert (tmp_path / "switchyard.db").exists()  # the embedded default
        with OpenAI(base_url=url + "/v1", api_key=demo_key, max_retries=0) as c:
            assert "gpt-5.1" in [m.id for m in c.models.list()]
            reply = c.chat.completions.create(model="gpt-5.1", messages=HELLO)
            assert "Hello!" in reply.choices[0].message.content
        req = urllib.request.Request(url + "/admin/v1/keys", headers={"authorization": f"Bearer {admin_key}"})
        with urllib.request.urlopen(req) as r:
            assert any(k["name"] == "demo" for k in json.load(r)["data"])
        if shutil.which("curl") and shutil.which("bash"):
            curl_line = re.search(r"^\s*(curl .*)$", out, re.M).group(1)
            result = subprocess.run(["bash", "-c", curl_line + " --silent --show-error"], capture_output=True, text=True, timeout=30)
            assert result.returncode == 0 and json.loads(result.stdout)["object"] == "chat.completion", result.stderr
    finally:
        assert proc.stop() == 0, proc.logs()


def test_mock_upstream_fault_injection_by_header(tmp_path):
    mock = start_mock(tmp_path)
    try:
        req = urllib.request.Request(
            mock.url + "/v1/chat/completions",
            data=json.dumps({"model": "m", "messages": HELLO}).encode(),
            headers={"content-type": "application/json", "x-mock-status": "503", "x-mock-retry-after": "2"},
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 503 and e.value.headers["retry-after"] == "2"
        assert json.load(e.value)["error"]["type"] == "server_error"
    finally:
        mock.stop()


def _stream_in_thread(base_url: str, key: str, content: str, result: dict):
    def run():
        try:
            with OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60) as c:
                chunks = list(c.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": content}], stream=True))
            result["text"] = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            result["finish"] = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        except Exception as e:  # noqa: BLE001 — reported by the test
            result["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def test_sigterm_drains_in_flight_streams_then_exits_zero(tmp_path):
    # ~8 s of stream: the listener must close while it is still running, even on a loaded machine.
    mock = start_mock(tmp_path, "--chunks", "10", "--chunk-delay-ms", "800")
    config = write_config(tmp_path, mock.url)
    key = create_key(tmp_path, config)["key"]
    gateway = start_gateway(tmp_path, config)
    try:
        result: dict = {}
        thread = _stream_in_thread(gateway.url + "/v1", key, "Hello!", result)
        deadline = time.time() + 10
        while json.load(urllib.request.urlopen(mock.url + "/mock/stats"))["active_streams"] != 1:
            assert time.time() < deadline
            time.sleep(0.02)
        gateway.popen.send_signal(signal.SIGTERM)
        # New connections are refused while the stream is still being served.
        deadline = time.time() + 5
        while not _refuses_connections(_port(gateway.url)):
            assert time.time() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.02)
        assert thread.is_alive(), "the stream ended before the listener closed"
        thread.join(30)
        assert "error" not in result, result.get("error")
        assert "You said: Hello!" in result["text"] and result["finish"] == ["stop"]
        assert gateway.popen.wait(30) == 0
        assert "draining" in gateway.logs()
    finally:
        gateway.stop()
        mock.stop()


def test_drain_timeout_bounds_shutdown(tmp_path):
    mock = start_mock(tmp_path, "--chunks", "100", "--chunk-delay-ms", "200")
    config = write_config(tmp_path, mock.url, extra="").read_text().replace("drain_timeout: 20s", "drain_timeout: 1s")
    path = tmp_path / "short-drain.yaml"
    path.write_text(config)
    key = create_key(tmp_path, path)["key"]
    gateway = start_gateway(tmp_path, path)
    try:
        result: dict = {}
        thread = _stream_in_thread(gateway.url + "/v1", key, "Hello!", result)
        deadline = time.time() + 10
        while json.load(urllib.request.urlopen(mock.url + "/mock/stats"))["active_streams"] != 1:
            assert time.time() < deadline
            time.sleep(0.02)
        started = time.time()
        gateway.popen.send_signal(signal.SIGTERM)
        assert gateway.popen.wait(15) == 0
        assert time.time() - started < 8, "shutdown waited for the 20 s stream instead of the 1 s drain timeout"
        thread.join(15)
        assert "finish" not in result or result["finish"] != ["stop"], "the stream could not have finished"
    finally:
        gateway.stop()
        mock.stop()


def test_the_documented_full_example_config_loads(tmp_path):
    import os

    from conftest import ROOT, binary

    text = (ROOT / "docs" / "configuration.md").read_text()
    block = text.split("## Full example", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    config = tmp_path / "full.yaml"
    config.write_text(block)
    env = {**os.environ, "SWITCHYARD_ADMIN_KEY": "admin-key-of-sixteen-chars", "OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "x", "ANTHROPIC_API_KEY_B": "x", "GEMINI_API_KEY": "x"}
    result = subprocess.run([binary(), "plans", "list", "--json", "--config", str(config)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    plans = json.loads(result.stdout)
    assert [p["name"] for p in plans] == ["free", "pro"] and plans[0]["default"] is True


def test_more_connections_than_descriptors_are_refused_not_fatal(tmp_path):
    """With a low descriptor limit, connections beyond what it can carry (two descriptors each: client and
    upstream) are closed at once; the gateway stays up, serves again, and leaks no descriptor. Without the
    budget the process runs out of descriptors and libdispatch traps (SIGILL)."""
    import os
    import resource

    from conftest import binary

    mock = start_mock(tmp_path)
    config = write_config(tmp_path, mock.url)
    key = create_key(tmp_path, config)["key"]
    limit = 400
    out, err = tmp_path / "gw.out", tmp_path / "gw.err"
    popen = subprocess.Popen([binary(), "serve", "--config", str(config)], cwd=tmp_path, stdout=out.open("w"), stderr=err.open("w"),
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
    try:
        deadline = time.time() + 30
        while not re.search(r"listening on (http://\S+)", out.read_text()) and time.time() < deadline:
            assert popen.poll() is None, err.read_text()
            time.sleep(0.05)
        url = re.search(r"listening on (http://\S+)", out.read_text()).group(1)
        budget = int(re.search(r'"max_connections":(\d+)', err.read_text()).group(1))
        assert budget == (limit - 256) // 2
        fds_before = len(os.listdir(f"/proc/{popen.pid}/fd"))
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"model": "gpt-5.1", "stream": True, "messages": [{"role": "user", "content": "[[mock chunks=4 chunk_delay_ms=1000]] hi"}]})
        request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
        sockets = []
        for _ in range(3 * budget):  # far more streams than descriptors allow
            s = socket.create_connection((host, int(port)))
            try:
                s.sendall(request)
            except OSError:
                pass
            sockets.append(s)
        time.sleep(1.5)
        served = 0
        for s in sockets:
            s.settimeout(0.05)
            try:
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    served += 1
            except OSError:
                pass
        assert popen.poll() is None, f"the gateway died:\n{err.read_text()[-2000:]}"
        assert 0 < served <= budget
        for s in sockets:
            s.close()
        with OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
            ok = client.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "hi"}])
        assert ok.choices[0].message.content
        deadline = time.time() + 15
        while len(os.listdir(f"/proc/{popen.pid}/fd")) > fds_before + 4 and time.time() < deadline:
            time.sleep(0.2)
        assert len(os.listdir(f"/proc/{popen.pid}/fd")) <= fds_before + 4, "descriptors leaked"
    finally:
        popen.send_signal(signal.SIGTERM)
        popen.wait(30)
        mock.stop()


def test_a_stalled_log_reader_never_stalls_requests(tmp_path):
    """The gateway writes an access line per request to stderr. When whatever reads stderr stops (a
    stuck log shipper), requests go on: the lines that do not fit the log buffer are dropped and
    counted in a warning line once the reader is back, never written half or lost uncounted."""
    mock = start_mock(tmp_path)
    config = write_config(tmp_path, mock.url, extra="log:\n  buffer: 16KB\n")
    key = create_key(tmp_path, config)["key"]
    out = tmp_path / "gateway.out"
    popen = subprocess.Popen([binary(), "serve", "--config", str(config)], cwd=tmp_path,
                             stdout=out.open("w"), stderr=subprocess.PIPE)
    gateway = Proc(popen, out, tmp_path / "gateway.err")
    try:
        try:
            fcntl.fcntl(popen.stderr.fileno(), fcntl.F_SETPIPE_SZ, 4096)
        except OSError:
            pass  # the startup lines already hold more than a page: the pipe keeps its 64 KB
        url = gateway.wait_for(r"listening on (http://\S+)").group(1)
        body = json.dumps({"model": "gpt-5.1", "messages": HELLO}).encode()
        total = 600  # ~300 KB of access lines: several times the pipe and the buffer
        for _ in range(total):
            request = urllib.request.Request(url + "/v1/chat/completions", data=body, method="POST", headers={
                "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as r:
                assert r.status == 200
        # The reader comes back; the gateway stops and writes what it holds.
        lines: list[bytes] = []
        reader = threading.Thread(target=lambda: lines.extend(popen.stderr.readlines()))
        reader.start()
        assert gateway.stop() == 0
        reader.join(30)
    finally:
        gateway.stop()
        mock.stop()
    events = [json.loads(line) for line in lines]  # every line whole
    served = sum(1 for e in events if e.get("path") == "/v1/chat/completions" and e.get("status") == 200)
    dropped = sum(e.get("dropped_lines", 0) for e in events)
    assert dropped > 0, "the stalled reader should have cost lines"
    assert served + dropped == total, (served, dropped)
