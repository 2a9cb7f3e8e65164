"""Credits as clients and operators see them: 402s in each SDK, cost headers, balances, codes, the CLI,
and a ledger that stays exact through a kill -9 in the middle of streaming load."""
from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
import uuid

import anthropic
import httpx2 as httpx
import openai
import pytest
from openai import OpenAI

from conftest import ADMIN_KEY, admin, run_cli, start_gateway, start_mock, write_config

HELLO = [{"role": "user", "content": "Hello!"}]

PRICING = """
pricing:
  input_tiers:
    - {max_input_tokens: 16000, credits: 1}
    - {max_input_tokens: 32000, credits: 2}
    - {max_input_tokens: 128000, credits: 5}
    - {credits: 10}
plans:
  - name: free
    signup_credits: 3
  - name: pro
    monthly_credits: 750
default_plan: free
billing:
  cancelled_streams: charge
"""

PRICED_MODELS = """
  - name: omni-fast
    provider: upstream
    upstream: mock-omni
    multiplier: 2
  - name: omni-claude
    provider: ant
    upstream: claude-haiku-4-5
    multiplier: 1
  - name: metered
    provider: upstream
    upstream: mock-metered
    max_tokens: 500
    price: {input_per_million: 1000, output_per_million: 2000}
"""


def priced_config(workdir, mock_url, name="billing.yaml"):
    config = write_config(workdir, mock_url, name=name, extra=PRICING)
    text = config.read_text().replace("models:\n", "models:" + PRICED_MODELS, 1)
    config.write_text(text)
    return config


@pytest.fixture(scope="module")
def billed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("billing")
    mock = start_mock(workdir)
    config = priced_config(workdir, mock.url)
    gateway = start_gateway(workdir, config)
    yield workdir, config, mock, gateway
    gateway.stop()
    mock.stop()


def new_user(gateway, credits: float | None = None, plan: str | None = None) -> tuple[str, str]:
    email = f"b-{uuid.uuid4().hex[:8]}@example.com"
    status, _, _ = admin(gateway.url, "POST", "/users", {"email": email, **({"plan": plan} if plan else {})})
    assert status == 201
    if credits:
        status, _, body = admin(gateway.url, "POST", f"/users/{email}/credits", {"amount": credits})
        assert status == 201, body
    status, _, key = admin(gateway.url, "POST", "/keys", {"name": "b", "user": email})
    return email, key["key"]


def test_sdks_see_402_and_the_cost_headers(billed):
    _, _, _, gateway = billed
    email, key = new_user(gateway)  # the free plan's 3 sign-up credits
    with OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(model="omni-fast", messages=HELLO)
        assert raw.headers["x-credits-charged"] == "2" and raw.headers["x-credits-remaining"] == "1"
        with pytest.raises(openai.APIStatusError) as info:
            c.chat.completions.create(model="omni-fast", messages=HELLO)
        assert info.value.status_code == 402 and info.value.code == "insufficient_credits"
        assert "balance is 1" in info.value.message
    with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0) as c:
        with pytest.raises(anthropic.APIStatusError) as ainfo:
            c.messages.create(model="omni-claude", max_tokens=10, messages=[{"role": "user", "content": "x " * 10_000}])
        assert ainfo.value.status_code == 402 and ainfo.value.body["error"]["type"] == "billing_error"
        assert c.messages.create(model="omni-claude", max_tokens=10, messages=HELLO).content
    balance = httpx.get(gateway.url + "/v1/credits", headers={"authorization": f"Bearer {key}"}).json()
    assert balance["balance"] == 0 and balance["buckets"] == []


def test_streams_carry_their_cost_in_a_trailing_comment_the_sdks_ignore(billed):
    _, _, _, gateway = billed
    _, key = new_user(gateway, credits=10)
    with OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as c:
        text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(model="omni-fast", messages=HELLO, stream=True) if ch.choices)
        assert text
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "omni-fast", "messages": HELLO, "stream": True}) as r:
        assert r.headers["x-credits-reserved"] == "2"
        body = r.read().decode()
    assert body.rstrip("\n").splitlines()[-1] == ": credits charged=2 remaining=9"  # 3 sign-up + 10 − 2 − 2


def test_codes_redeem_once_through_the_api(billed):
    workdir, config, _, gateway = billed
    codes = json.loads(run_cli(["codes", "create", "--credits", "25", "--count", "2", "--json", "--config", str(config)], workdir).stdout)
    assert len(codes) == 2 and all(c["code"].startswith("SYC-") for c in codes)
    _, key = new_user(gateway)
    headers = {"authorization": f"Bearer {key}"}
    first = httpx.post(gateway.url + "/v1/credits/redeem", headers=headers, json={"code": codes[0]["code"]})
    assert first.status_code == 200 and first.json() == {"redeemed": 25, "balance": 28}
    second = httpx.post(gateway.url + "/v1/credits/redeem", headers=headers, json={"code": codes[0]["code"]})
    assert second.status_code == 409 and second.json()["error"]["code"] == "code_already_redeemed"
    listed = run_cli(["codes", "list", "--config", str(config)], workdir).stdout
    assert "redeemed" in listed and codes[0]["code"] not in listed


def test_credits_and_usage_cli(billed):
    workdir, config, _, gateway = billed
    email, key = new_user(gateway)
    cli = lambda *a, check=True: run_cli([*a, "--config", str(config)], workdir, check=check)
    assert "Granted 7.5 credits" in cli("credits", "grant", email, "7.5", "--note", "invoice 12").stdout
    cli("credits", "grant", email, "2", "--kind", "bonus", "--expires", "30d")
    bad = cli("credits", "grant", email, "1", "--expires", "30d", check=False)
    assert bad.returncode != 0 and "top-ups never expire" in bad.stderr
    assert cli("credits", "grant", "nobody@example.com", "1", check=False).returncode != 0
    shown = json.loads(cli("credits", "show", email, "--json").stdout)
    assert shown["balance"] == 12.5 and [b["kind"] for b in shown["buckets"]] == ["bonus", "bonus", "topup"]
    assert all(set(b) >= {"kind", "amount", "expires_at"} for b in shown["buckets"])
    with OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(model="metered", messages=HELLO)
        request_id = raw.headers["x-request-id"]
    history = json.loads(cli("credits", "history", email, "--json").stdout)
    kinds = [e["kind"] for e in history]
    # Newest first: the charge, the releases of the hold, the hold (split over buckets in spend order).
    assert kinds[0] == "charge" and kinds.index("release") < kinds.index("reservation") and "topup" in kinds
    rows = json.loads(cli("usage", "--user", email, "--json").stdout)
    assert len(rows) == 1
    row = rows[0]
    for field in ["time", "key_id", "model", "upstream", "input_tokens", "output_tokens", "cached_tokens", "credits", "status", "latency_ms", "request_id"]:
        assert field in row, field
    assert row["request_id"] == request_id and row["model"] == "metered" and row["upstream"] == "mock-metered" and row["status"] == 200
    assert row["credits"] == (row["input_tokens"] * 1000 + row["output_tokens"] * 2000) / 1_000_000
    assert json.loads(cli("usage", "--user", email, "--since", "2999-01-01", "--json").stdout) == []
    assert "consistent" in cli("credits", "check").stdout


def test_kill_9_mid_stream_loses_and_doubles_nothing(tmp_path):
    """Streams in flight when the gateway is killed: on restart every hold is settled (charged, per
    `cancelled_streams: charge`), finished streams keep their one charge, and the ledger balances."""
    mock = start_mock(tmp_path)
    config = priced_config(tmp_path, mock.url)
    gateway = start_gateway(tmp_path, config)
    try:
        email, key = new_user(gateway, credits=1000)
        results: dict[str, str] = {}

        def stream(i: int) -> None:
            # Half the streams finish quickly, half are still running when the gateway dies.
            delay = 5 if i % 2 == 0 else 3000
            rid = f"crash-{i}"
            try:
                with httpx.stream("POST", gateway.url + "/v1/chat/completions", timeout=30,
                                  headers={"authorization": f"Bearer {key}", "x-request-id": rid},
                                  json={"model": "omni-fast", "stream": True,
                                        "messages": [{"role": "user", "content": f"[[mock chunks=10 chunk_delay_ms={delay}]] go {i}"}]}) as r:
                    body = "".join(r.iter_text())
                results[rid] = "finished" if ": credits charged=2" in body else "cut"
            except httpx.HTTPError:
                results[rid] = "cut"

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        # Kill once the quick half has finished and the slow half is streaming (polled, not a fixed
        # sleep: on a loaded machine the quick ones can take longer than any guess).
        deadline = time.time() + 30
        while time.time() < deadline:
            done = sum(1 for r in list(results.values()) if r == "finished")
            active = json.load(urllib.request.urlopen(mock.url + "/mock/stats"))["active_streams"]
            if done == 8 and active == 8:
                break
            time.sleep(0.05)
        gateway.popen.send_signal(signal.SIGKILL)
        gateway.popen.wait(10)
        for t in threads:
            t.join(30)
        finished = [rid for rid, r in results.items() if r == "finished"]
        assert len(finished) == 8 and len(results) == 16, results

        gateway = start_gateway(tmp_path, config, name="restarted")
        status, _, check = admin(gateway.url, "GET", "/ledger/check")
        assert status == 200 and check["consistent"] and check["open_reservations"] == 0, check
        assert "settled credit reservations left open by the previous run" in gateway.logs()
        _, _, usage = admin(gateway.url, "GET", f"/usage?user={email}")
        by_request = {}
        for row in usage["data"]:
            assert row["request_id"] not in by_request, "a request has two usage rows"
            by_request[row["request_id"]] = row
        assert set(by_request) == set(results), "a request lost its usage row"
        for rid in finished:
            assert by_request[rid]["outcome"] == "ok" and by_request[rid]["credits"] == 2
        for rid in set(results) - set(finished):
            assert by_request[rid]["outcome"] == "interrupted" and by_request[rid]["credits"] == 2  # the hold, per policy
        _, _, balance = admin(gateway.url, "GET", f"/users/{email}/credits")
        charged = sum(row["credits"] for row in usage["data"])
        assert charged == 32 and balance["balance"] == 1000 - charged + 3  # plus the free plan's sign-up bonus
        assert check["total_charged"] == check["total_usage_credits"]
    finally:
        gateway.stop()
        mock.stop()


def test_kill_9_after_answers_decided_in_memory_loses_nothing(tmp_path):
    """Reservations and settlements are decided in memory and journaled; the database gets them later
    (here: an hour later, so a kill -9 certainly comes first). The next start applies the journal:
    every answered request keeps exactly its one charge and usage row."""
    mock = start_mock(tmp_path)
    config = priced_config(tmp_path, mock.url)
    config.write_text(config.read_text().replace("cancelled_streams: charge", "cancelled_streams: charge\n  ledger_write_delay: 1h"))
    gateway = start_gateway(tmp_path, config)
    try:
        email, key = new_user(gateway, credits=100)
        client = OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
        for i in range(6):
            raw = client.chat.completions.with_raw_response.create(model="omni-fast", messages=[{"role": "user", "content": f"hi {i}"}])
            assert raw.headers["x-credits-charged"] == "2"
            assert raw.headers["x-credits-remaining"] == str(103 - 2 * (i + 1))  # 100 + the free plan's 3 sign-up credits
        # Read to the end: the SDK stops at [DONE], before the comment that says the stream was settled.
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", timeout=30, headers={"authorization": f"Bearer {key}"},
                          json={"model": "omni-fast", "stream": True, "messages": HELLO}) as r:
            assert ": credits charged=2 remaining=89" in "".join(r.iter_text())
        gateway.popen.send_signal(signal.SIGKILL)
        gateway.popen.wait(10)

        config.write_text(config.read_text().replace("\n  ledger_write_delay: 1h", ""))
        gateway = start_gateway(tmp_path, config, name="restarted")
        assert "applied credit ledger operations the previous run had journaled but not written" in gateway.logs()
        status, _, check = admin(gateway.url, "GET", "/ledger/check")
        assert status == 200 and check["consistent"] and check["open_reservations"] == 0, check
        _, _, usage = admin(gateway.url, "GET", f"/usage?user={email}")
        assert len(usage["data"]) == 7 and all(row["outcome"] == "ok" and row["credits"] == 2 for row in usage["data"]), usage
        _, _, balance = admin(gateway.url, "GET", f"/users/{email}/credits")
        assert balance["balance"] == 103 - 14 and balance["reserved"] == 0
        # The replayed journal is gone; a graceful stop writes what is queued and leaves no journal behind.
        client = OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
        client.chat.completions.create(model="omni-fast", messages=HELLO)
        assert gateway.stop() == 0
        assert sorted(p.name for p in tmp_path.glob("switchyard.db-ledger.*")) == []
        gateway = start_gateway(tmp_path, config, name="third")
        assert "journaled but not written" not in gateway.logs()
        _, _, usage = admin(gateway.url, "GET", f"/usage?user={email}")
        assert len(usage["data"]) == 8
    finally:
        gateway.stop()
        mock.stop()


def test_parallel_requests_on_a_small_balance_never_go_below_zero(billed):
    _, _, _, gateway = billed
    email, key = new_user(gateway, credits=7)  # + 3 sign-up = 10 credits: 5 requests at 2
    codes = []

    def call() -> None:
        r = httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                       json={"model": "omni-fast", "messages": HELLO}, timeout=30)
        codes.append(r.status_code)

    threads = [threading.Thread(target=call) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes.count(200) == 5 and codes.count(402) == 25
    _, _, balance = admin(gateway.url, "GET", f"/users/{email}/credits")
    assert balance["balance"] == 0
    deadline = time.time() + 5
    while True:
        _, _, usage = admin(gateway.url, "GET", f"/usage?user={email}")
        if len(usage["data"]) == 30 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert len(usage["data"]) == 30 and sum(r["credits"] for r in usage["data"]) == 10
