"""Routing through the official SDKs: heartbeats while a stream waits for its first byte are no-ops to
every SDK, a failing deployment is invisible behind a healthy one, and a model whose deployments are all
cooling down answers 503 with Retry-After in each client's format.

The deployments are the mock upstream behind providers whose headers inject faults (`x-mock-status`).
"""
from __future__ import annotations

import anthropic
import httpx2 as httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors

from conftest import create_key, start_gateway, start_mock, write_config

ROUTING = """routing:
  timeouts: {connect: 2s, first_byte: 5s, idle: 10s}
  heartbeat: 300ms
  cooldown: {failures: 1, for: 30s}
"""

@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("routing")
    mock = start_mock(workdir)
    config = write_config(workdir, mock.url, routing=ROUTING)
    # Fault-injecting providers and the models over them, appended to the standard catalog.
    text = config.read_text()
    text = text.replace(
        "models:\n",
        f"""  - {{name: failing, type: openai, base_url: "{mock.url}/v1", headers: {{x-mock-status: "503"}}}}
  - {{name: healthy, type: openai, base_url: "{mock.url}/v1", headers: {{x-mock-tag: healthy}}}}
models:
  - name: resilient
    strategy: ordered
    deployments: [{{provider: failing}}, {{provider: healthy}}]
  - name: down
    deployments: [{{provider: failing}}, {{provider: failing, upstream: other}}]
  - name: claude-down
    deployments: [{{provider: failing}}, {{provider: failing, upstream: other}}]
""",
        1,
    )
    config.write_text(text)
    key = create_key(workdir, config)["key"]
    gateway = start_gateway(workdir, config)
    yield gateway.url, key, mock
    assert gateway.stop() == 0, gateway.logs()
    mock.stop()


SLOW = "[[mock delay_ms=1300]] say something"
# The raw checks count pings (300 ms apart): 3 s leaves room for timers that fire late on a loaded machine.
RAW_SLOW = "[[mock delay_ms=3000]] say something"


def test_openai_sdk_stream_ignores_heartbeats(routed):
    url, key, _ = routed
    raw = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                     json={"model": "gpt-5.1", "stream": True, "messages": [{"role": "user", "content": RAW_SLOW}]})
    assert raw.text.startswith(": ping\n\n") and raw.text.count(": ping\n\n") >= 3
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        chunks = list(client.chat.completions.create(model="gpt-5.1", stream=True, messages=[{"role": "user", "content": SLOW}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].choices[0].finish_reason == "stop"


def test_anthropic_sdk_stream_ignores_ping_events(routed):
    url, key, _ = routed
    raw = httpx.post(f"{url}/v1/messages", headers={"x-api-key": key, "anthropic-version": "2023-06-01"}, timeout=30,
                     json={"model": "claude-up", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": RAW_SLOW}]})
    assert raw.text.startswith("event: ping\ndata: {\"type\": \"ping\"}\n\n")
    with anthropic.Anthropic(base_url=url, api_key=key, max_retries=0) as client:
        with client.messages.stream(model="claude-up", max_tokens=50, messages=[{"role": "user", "content": SLOW}]) as stream:
            final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.content[0].text


def test_gemini_sdk_stream_ignores_heartbeats(routed):
    url, key, _ = routed
    raw = httpx.post(f"{url}/v1beta/models/gemini-up:streamGenerateContent?alt=sse", headers={"x-goog-api-key": key}, timeout=30,
                     json={"contents": [{"role": "user", "parts": [{"text": RAW_SLOW}]}]})
    assert raw.text.startswith("\n\n\n")  # google-genai reads comments as JSON; blank lines are no-ops
    client = genai.Client(api_key=key, http_options={"base_url": url, "retry_options": {"attempts": 1}})
    text = "".join(chunk.text or "" for chunk in client.models.generate_content_stream(model="gemini-up", contents=SLOW))
    client.close()
    assert text


def test_a_failing_deployment_is_invisible_behind_a_healthy_one(routed):
    url, key, mock = routed
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        for _ in range(3):
            r = client.chat.completions.create(model="resilient", messages=[{"role": "user", "content": "hi"}])
            assert r.model == "resilient" and r.choices[0].message.content
    tags = httpx.get(mock.url + "/mock/stats").json()["by_tag"]
    assert tags["healthy"] == 3
    deployments = httpx.get(f"{url}/admin/v1/deployments?model=resilient",
                            headers={"authorization": "Bearer sy-admin-compat-0123456789abcdef"}).json()["data"]
    assert [d["state"] for d in deployments] == ["cooling_down", "healthy"]


def test_every_deployment_down_is_503_with_retry_after_in_each_format(routed):
    url, key, _ = routed
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        with pytest.raises(openai.InternalServerError):  # the provider's own 503, once per deployment
            client.chat.completions.create(model="down", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(model="down", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 503 and e.value.code == "no_deployment_available"
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 30
    with anthropic.Anthropic(base_url=url, api_key=key, max_retries=0) as client:
        with pytest.raises(anthropic.InternalServerError):
            client.messages.create(model="claude-down", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(anthropic.InternalServerError) as a:
            client.messages.create(model="claude-down", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert a.value.status_code == 503 and a.value.body["type"] == "error"
    assert "cooling down" in a.value.body["error"]["message"]
    client = genai.Client(api_key=key, http_options={"base_url": url, "retry_options": {"attempts": 1}})
    with pytest.raises(genai_errors.ServerError) as g:
        client.models.generate_content(model="down", contents="hi")
    client.close()
    assert g.value.code == 503 and g.value.status == "UNAVAILABLE"
