"""Plans, limits and key states as the official SDKs see them, and the `users`/`keys`/`plans` CLI."""
from __future__ import annotations

import json
import re
import threading
import time
import uuid

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from openai import OpenAI

from conftest import admin, clear_of_utc_midnight, run_cli, start_gateway

HELLO = [{"role": "user", "content": "Hello!"}]


def email() -> str:
    return f"u-{uuid.uuid4().hex[:10]}@example.com"


def openai_client(stack, key: str, retries: int = 0) -> OpenAI:
    return OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=retries, timeout=30)


def wait_in_flight(stack, user: str, count: int = 1, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        _, _, counters = stack.admin("GET", f"/counters?user={user}")
        if sum(row["in_flight"] for row in counters["data"]) >= count:
            return
        time.sleep(0.02)
    raise AssertionError("the slow request never became in flight")


def test_openai_sdk_raises_rate_limit_error_and_its_retry_waits_the_right_time(accounts):
    user = email()
    key = accounts.key(user, limits={"concurrent_requests": 1})["key"]
    # The slow request holds the only slot for ~2.5 s: a stream (its first byte comes at once, inside the
    # suite's first-byte budget) of five chunks 500 ms apart.
    slow_result = {}

    def slow():
        with openai_client(accounts, key) as c:
            text = "".join(chunk.choices[0].delta.content or "" for chunk in c.chat.completions.create(
                model="gpt-5.1", stream=True, messages=[{"role": "user", "content": "[[mock chunks=5 chunk_delay_ms=500]] hi"}])
                if chunk.choices)
        slow_result["text"] = text
        slow_result["done"] = time.time()

    slow_thread = threading.Thread(target=slow, daemon=True)
    slow_thread.start()
    wait_in_flight(accounts, user)

    with openai_client(accounts, key) as c:
        with pytest.raises(openai.RateLimitError) as info:
            c.chat.completions.create(model="demo-mock", messages=HELLO)
    e = info.value
    assert e.status_code == 429 and e.code == "rate_limit_exceeded"
    assert "1 request at a time for this API key" in e.message
    assert e.response.headers["retry-after"] == "1" and e.response.headers["retry-after-ms"] == "1000"

    # The SDK's own retry honours retry-after-ms: it waits, and the retry lands after the slot is free.
    started = time.time()
    with openai_client(accounts, key, retries=5) as c:
        raw = c.chat.completions.with_raw_response.create(model="demo-mock", messages=HELLO)
    answered = time.time()
    assert raw.parse().choices[0].message.content
    slow_thread.join(30)
    assert slow_result.get("text"), "the slow stream did not finish"
    # The slot comes back as the stream's last byte is written, a moment before its client has read
    # it; a retry served while the stream still held the slot would come a second or more earlier.
    assert answered >= slow_result["done"] - 0.5, "the retry succeeded while the slow request still held the only slot"
    assert answered - started >= 0.9
    assert raw.headers["x-ratelimit-limit-requests"] == "1000" and int(raw.headers["x-ratelimit-remaining-requests"]) < 1000
    assert re.fullmatch(r"\d+(\.\d+)?(ms|s)|\d+m\d+(\.\d+)?s", raw.headers["x-ratelimit-reset-requests"])
    assert raw.headers["x-ratelimit-limit"] == "1000"


def test_anthropic_sdk_raises_rate_limit_error_with_anthropic_headers(accounts):
    key = accounts.key(email(), limits={"requests_per_minute": 1})["key"]
    with anthropic.Anthropic(base_url=accounts.url, api_key=key, max_retries=0, timeout=30) as c:
        raw = c.messages.with_raw_response.create(model="demo-mock", max_tokens=20, messages=HELLO)
        assert raw.parse().content[0].text
        assert raw.headers["anthropic-ratelimit-requests-limit"] == "1"
        assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", raw.headers["anthropic-ratelimit-requests-reset"])
        with pytest.raises(anthropic.RateLimitError) as info:
            c.messages.create(model="demo-mock", max_tokens=20, messages=HELLO)
    e = info.value
    assert e.status_code == 429
    assert e.body["error"]["type"] == "rate_limit_error"
    assert "1 request per minute for this API key" in e.body["error"]["message"]
    assert 0 < int(e.response.headers["retry-after-ms"]) <= 60_000
    assert 1 <= int(e.response.headers["retry-after"]) <= 60


def test_gemini_sdk_sees_resource_exhausted(accounts):
    clear_of_utc_midnight()
    key = accounts.key(email(), limits={"requests_per_day": 1})["key"]
    client = genai.Client(api_key=key, http_options={"base_url": accounts.url, "timeout": 30_000, "retry_options": {"attempts": 1}})
    try:
        assert client.models.generate_content(model="demo-mock", contents="hi").text
        with pytest.raises(genai_errors.ClientError) as info:
            client.models.generate_content(model="demo-mock", contents="hi")
    finally:
        client.close()
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    assert "1 request per day" in info.value.message


def test_model_access_follows_the_plan_in_every_sdk(accounts):
    key = accounts.key(email())["key"]  # the default plan, free: demo-mock and gpt-5.1
    with openai_client(accounts, key) as c:
        assert sorted(m.id for m in c.models.list()) == ["demo-mock", "gpt-5.1"]
        with pytest.raises(openai.PermissionDeniedError) as info:
            c.chat.completions.create(model="claude-up", messages=HELLO)
        assert info.value.code == "model_not_allowed"
        assert "not included in your plan `free`" in info.value.message and "plan `pro`" in info.value.message
    with anthropic.Anthropic(base_url=accounts.url, api_key=key, max_retries=0) as c:
        assert sorted(m.id for m in c.models.list()) == ["demo-mock", "gpt-5.1"]
        with pytest.raises(anthropic.PermissionDeniedError) as ainfo:
            c.messages.create(model="gemini-up", max_tokens=10, messages=HELLO)
        assert ainfo.value.body["error"]["type"] == "permission_error"

    # Moving the user to pro opens every model on the next request.
    user = email()
    key = accounts.key(user)["key"]
    with openai_client(accounts, key) as c:
        with pytest.raises(openai.PermissionDeniedError):
            c.chat.completions.create(model="claude-up", messages=HELLO)
        status, _, body = accounts.admin("PATCH", f"/users/{user}", {"plan": "pro"})
        assert status == 200 and body["plan"] == "pro"
        assert c.chat.completions.create(model="claude-up", messages=HELLO).choices[0].message.content
        assert len(c.models.list().data) > 2


def test_expired_keys_and_disabled_users_get_clear_errors(accounts):
    user = email()
    # Whole seconds, 5 s ahead: the first call must land before it even on a loaded machine.
    expiry = int(time.time()) + 5
    created = accounts.key(user, expires_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry)))
    with openai_client(accounts, created["key"]) as c:
        assert c.chat.completions.create(model="demo-mock", messages=HELLO).choices
        time.sleep(max(0, expiry - time.time()) + 0.3)
        with pytest.raises(openai.AuthenticationError) as info:
            c.chat.completions.create(model="demo-mock", messages=HELLO)
        assert info.value.code == "key_expired" and "expired at" in info.value.message

    key = accounts.key(user)["key"]
    accounts.admin("PATCH", f"/users/{user}", {"disabled": True})
    with anthropic.Anthropic(base_url=accounts.url, api_key=key, max_retries=0) as c:
        with pytest.raises(anthropic.PermissionDeniedError) as ainfo:
            c.messages.create(model="demo-mock", max_tokens=10, messages=HELLO)
        assert "is disabled" in ainfo.value.body["error"]["message"]


def cli(stack, *args: str, check: bool = True):
    return run_cli([*args, "--config", str(stack.config)], stack.workdir, check=check)


def test_users_cli_and_changes_reach_the_gateway_on_the_next_request(accounts):
    user = email()
    created = json.loads(cli(accounts, "users", "create", user, "--json").stdout)
    assert created["email"] == user and created["plan"] == "free" and created["status"] == "active"
    assert "already exists" in cli(accounts, "users", "create", user, check=False).stderr
    bad = cli(accounts, "users", "create", email(), "--plan", "gold", check=False)
    assert bad.returncode != 0 and "no plan named gold" in bad.stderr and "free, pro" in bad.stderr
    assert cli(accounts, "users", "create", "not-an-email", check=False).returncode != 0

    listed = json.loads(cli(accounts, "users", "list", "--json").stdout)
    assert any(u["email"] == user for u in listed)
    assert user in cli(accounts, "users", "list").stdout

    key = json.loads(cli(accounts, "keys", "create", "--name", "cli", "--user", user, "--json").stdout)["key"]
    with openai_client(accounts, key) as c:
        with pytest.raises(openai.PermissionDeniedError):
            c.chat.completions.create(model="claude-up", messages=HELLO)
        # The gateway polls the database only hourly here: effects that show at once were announced by the CLI.
        assert "now on plan pro" in cli(accounts, "users", "set-plan", user, "pro").stdout
        assert c.chat.completions.create(model="claude-up", messages=HELLO).choices
        cli(accounts, "users", "disable", user)
        with pytest.raises(openai.PermissionDeniedError) as info:
            c.chat.completions.create(model="demo-mock", messages=HELLO)
        assert info.value.code == "account_disabled"
        cli(accounts, "users", "enable", user)
        assert c.chat.completions.create(model="demo-mock", messages=HELLO).choices

    shown = json.loads(cli(accounts, "users", "show", user, "--json").stdout)
    assert shown["plan"] == "pro" and len(shown["keys"]) == 1 and key not in json.dumps(shown)
    assert "pro" in cli(accounts, "users", "show", user).stdout
    assert "no user" in cli(accounts, "users", "set-plan", "nobody@example.com", "pro", check=False).stderr


def test_keys_cli_options_rotation_and_revocation(accounts):
    user = email()
    created = json.loads(cli(
        accounts, "keys", "create", "--name", "opts", "--user", user, "--expires", "30d", "--models", "demo-mock",
        "--rpm", "2", "--json").stdout)
    assert created["models"] == ["demo-mock"] and created["limits"] == {"requests_per_minute": 2}
    assert created["expires_at"] > time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 29 * 86400))
    for bad, text in [(["--expires", "2001-01-01"], "in the future"), (["--expires", "someday"], "--expires expects"),
                      (["--models", "llama"], "not a model in the catalog"), (["--rpm", "0"], "at least 1")]:
        result = cli(accounts, "keys", "create", "--name", "bad", *bad, check=False)
        assert result.returncode != 0 and text in result.stderr, result.stderr

    key = created["key"]
    with openai_client(accounts, key) as c:
        assert c.chat.completions.create(model="demo-mock", messages=HELLO).choices
        with pytest.raises(openai.PermissionDeniedError) as info:
            c.chat.completions.create(model="gpt-5.1", messages=HELLO)
        assert "may only use the models `demo-mock`" in info.value.message
        assert c.chat.completions.create(model="demo-mock", messages=HELLO).choices
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="demo-mock", messages=HELLO)
        # Dropping the key's own limits and model list applies at once.
        updated = cli(accounts, "keys", "update", created["id"], "--plan-limits", "--all-models").stdout
        assert "Updated key" in updated
        assert c.chat.completions.create(model="gpt-5.1", messages=HELLO).choices

    # Rotation: the old secret works through the grace period, the new one at once.
    # A 6 s grace: the CLI's exit and two calls must fit inside it on a loaded machine.
    rotated_at = time.time()
    rotated = json.loads(cli(accounts, "keys", "rotate", created["id"], "--grace", "6s", "--json").stdout)
    assert rotated["id"] == created["id"] and rotated["key"] != key
    with openai_client(accounts, key) as old, openai_client(accounts, rotated["key"]) as new:
        assert old.chat.completions.create(model="demo-mock", messages=HELLO).choices
        assert new.chat.completions.create(model="demo-mock", messages=HELLO).choices
        time.sleep(max(0, rotated_at + 6.3 - time.time()))
        with pytest.raises(openai.AuthenticationError) as info:
            old.chat.completions.create(model="demo-mock", messages=HELLO)
        assert info.value.code == "key_rotated"
        assert new.chat.completions.create(model="demo-mock", messages=HELLO).choices
        text = cli(accounts, "keys", "rotate", created["id"]).stdout
        assert "old secret no longer works" in text
        newest = text.strip().splitlines()[-1]
        with pytest.raises(openai.AuthenticationError):
            new.chat.completions.create(model="demo-mock", messages=HELLO)
        cli(accounts, "keys", "revoke", created["id"])
    with openai_client(accounts, newest) as c:
        with pytest.raises(openai.AuthenticationError) as info:
            c.chat.completions.create(model="demo-mock", messages=HELLO)
        assert "revoked" in info.value.message
    shown = cli(accounts, "keys", "show", created["id"]).stdout
    assert "revoked" in shown and created["id"] in shown


def test_plans_cli(accounts):
    plans = json.loads(cli(accounts, "plans", "list", "--json").stdout)
    assert [p["name"] for p in plans] == ["free", "pro"]
    assert plans[0]["default"] is True and plans[0]["limits"]["requests_per_minute"] == 1000
    text = cli(accounts, "plans").stdout
    assert "free (default)" in text and "1000/min" in text and "20 concurrent" in text


def test_daily_counts_survive_a_restart(tmp_path):
    from conftest import PLANS, start_mock, write_config

    clear_of_utc_midnight(120)  # two gateway starts inside one day

    mock = start_mock(tmp_path)
    config = write_config(tmp_path, mock.url, extra=PLANS)
    gateway = start_gateway(tmp_path, config)
    try:
        status, _, created = admin(gateway.url, "POST", "/keys", {"name": "d", "user": "day@example.com", "limits": {"requests_per_day": 3}})
        assert status == 201
        with OpenAI(base_url=gateway.url + "/v1", api_key=created["key"], max_retries=0) as c:
            for _ in range(2):
                c.chat.completions.create(model="demo-mock", messages=HELLO)
        assert gateway.stop() == 0
        gateway = start_gateway(tmp_path, config, name="gateway2")
        with OpenAI(base_url=gateway.url + "/v1", api_key=created["key"], max_retries=0) as c:
            c.chat.completions.create(model="demo-mock", messages=HELLO)
            with pytest.raises(openai.RateLimitError) as info:
                c.chat.completions.create(model="demo-mock", messages=HELLO)
        assert "3 requests per day" in info.value.message
    finally:
        gateway.stop()
        mock.stop()


def test_unknown_plan_in_config_is_a_startup_error_and_a_vanished_plan_a_clear_refusal(tmp_path):
    from conftest import PLANS, start_mock, write_config

    mock = start_mock(tmp_path)
    try:
        bad = write_config(tmp_path, mock.url, name="bad.yaml", extra=PLANS.replace("default_plan: free", "default_plan: gold"))
        result = run_cli(["serve", "--config", str(bad)], tmp_path, check=False)
        assert result.returncode != 0 and "default_plan `gold` is not a defined plan" in result.stderr

        # A user on `pro`, then `pro` is removed from the configuration: a warning at startup, 403 per request.
        config = write_config(tmp_path, mock.url, extra=PLANS)
        run_cli(["users", "create", "vip@example.com", "--plan", "pro", "--config", str(config)], tmp_path)
        key = json.loads(run_cli(["keys", "create", "--name", "v", "--user", "vip@example.com", "--json", "--config", str(config)], tmp_path).stdout)["key"]
        shrunk = write_config(tmp_path, mock.url, name="shrunk.yaml", extra=PLANS.split("  - name: pro")[0] + "default_plan: free\n")
        gateway = start_gateway(tmp_path, shrunk)
        try:
            with OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as c:
                with pytest.raises(openai.PermissionDeniedError) as info:
                    c.chat.completions.create(model="demo-mock", messages=HELLO)
            assert info.value.code == "plan_unavailable" and "`pro`" in info.value.message
            assert "users are on a plan the configuration does not define" in gateway.logs()
            listed = run_cli(["users", "list", "--config", str(shrunk)], tmp_path).stdout
            assert "pro (undefined!)" in listed
        finally:
            gateway.stop()
    finally:
        mock.stop()
