"""The official `openai` Python SDK against the gateway: what a user's code sees."""
from __future__ import annotations

import json

import openai
import pytest
from openai import OpenAI

HELLO = [{"role": "user", "content": "Hello!"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}


def test_non_stream(client: OpenAI):
    completion = client.chat.completions.create(model="gpt-5.1", messages=HELLO, max_tokens=64)
    assert completion.model == "gpt-5.1"  # the client-facing name, not the upstream id
    assert completion.object == "chat.completion"
    assert "You said: Hello!" in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_stream_text_and_usage(client: OpenAI):
    stream = client.chat.completions.create(
        model="gpt-5.1", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "You said: Hello!" in text
    assert all(c.model == "gpt-5.1" for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_stream_helper_assembles_text(client: OpenAI):
    with client.chat.completions.stream(model="gpt-5.1", messages=HELLO) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert len(deltas) >= 2  # really streamed in pieces
    assert "".join(deltas) == final.choices[0].message.content


def test_tool_call_non_stream(client: OpenAI):
    completion = client.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL])
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    call = message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock", "unit": "c"}


def test_streamed_tool_call_assembled_by_the_sdk(client: OpenAI):
    with client.chat.completions.stream(
        model="gpt-5.1", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL]
    ) as stream:
        arg_deltas = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    assert len(arg_deltas) >= 2  # arguments arrive in fragments
    call = final.choices[0].message.tool_calls[0]
    assert call.id.startswith("call_")
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock", "unit": "c"}
    assert final.choices[0].finish_reason == "tool_calls"


def test_tool_result_round_trip(client: OpenAI):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"c"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"},
    ]
    completion = client.chat.completions.create(model="gpt-5.1", messages=messages, tools=[WEATHER_TOOL])
    assert "18 degrees and sunny" in completion.choices[0].message.content


def test_provider_specific_parameters_pass_through(client: OpenAI, stack):
    client.chat.completions.create(
        model="gpt-5.1", messages=HELLO, temperature=0.3, extra_body={"top_k": 40, "repetition_penalty": 1.1}
    )
    seen = stack.last_upstream_request()
    assert seen["body"]["model"] == "mock-gpt-5.1-2025"
    assert seen["body"]["top_k"] == 40 and seen["body"]["repetition_penalty"] == 1.1
    assert seen["body"]["temperature"] == 0.3
    assert seen["headers"]["authorization"] == "Bearer upstream-secret"


def test_models_list(client: OpenAI):
    ids = [m.id for m in client.models.list()]
    assert ids == ["gpt-5.1", "dead-model", "demo-mock", "claude-up", "gemini-up", "gpt-5.3-codex", "claude-up-thinking"]  # not the wildcard


def test_builtin_mock_provider(client: OpenAI):
    completion = client.chat.completions.create(model="demo-mock", messages=HELLO)
    assert completion.model == "demo-mock"
    assert "Hello!" in completion.choices[0].message.content


def test_request_id_is_exposed(client: OpenAI):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-5.1", messages=HELLO, extra_headers={"x-request-id": "compat-req-1"}
    )
    assert raw.headers["x-request-id"] == "compat-req-1"
    assert raw.parse()._request_id == "compat-req-1"


def test_base_url_prefixes(stack):
    for prefix in ("/v1", "/api/v1", "/api/proxy/v1"):
        with OpenAI(base_url=stack.gateway.url + prefix, api_key=stack.key, max_retries=0) as c:
            assert c.chat.completions.create(model="gpt-5.1", messages=HELLO).choices[0].message.content


def test_x_api_key_header(stack):
    # As one seed product documents: the key in x-api-key (the SDK's own Authorization is a placeholder).
    import urllib.request

    req = urllib.request.Request(
        stack.base_url + "/chat/completions",
        data=json.dumps({"model": "gpt-5.1", "messages": HELLO}).encode(),
        headers={"x-api-key": stack.key, "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        assert json.load(r)["model"] == "gpt-5.1"


# --- errors: each maps to the SDK's exception class ---------------------------------------------


def test_bad_key_raises_authentication_error(stack):
    with OpenAI(base_url=stack.base_url, api_key="sy-wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as e:
            c.chat.completions.create(model="gpt-5.1", messages=HELLO)
    assert e.value.status_code == 401
    assert e.value.code == "invalid_api_key"
    assert e.value.request_id  # the gateway's x-request-id


def test_unknown_model_raises_not_found(client: OpenAI):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nope", messages=HELLO)
    assert e.value.code == "model_not_found"
    assert "gpt-nope" in e.value.message


def test_malformed_request_raises_bad_request(client: OpenAI):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-5.1", messages=HELLO, extra_body={"stream": "yes"})
    assert e.value.param == "stream"


def test_upstream_400_passes_through_as_bad_request(client: OpenAI):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "[[mock status=400 message=context_too_long]]"}])
    assert e.value.body["message"] == "context_too_long"


def test_upstream_429_raises_rate_limit_with_retry_after(client: OpenAI):
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "[[mock status=429 retry_after=3]]"}])
    assert e.value.response.headers["retry-after"] == "3"


def test_upstream_500_raises_internal_server_error(client: OpenAI):
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "[[mock status=500]]"}])
    assert e.value.status_code == 500


def test_unreachable_upstream_is_502(client: OpenAI):
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="dead-model", messages=HELLO)
    assert e.value.status_code == 502
    assert e.value.code == "upstream_unreachable"


def test_upstream_timeout_is_504(client: OpenAI):
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "[[mock delay_ms=5000]]"}])
    assert e.value.status_code == 504
    assert e.value.code == "upstream_timeout"


def test_body_over_limit_is_413(client: OpenAI):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "x" * 100_000}])
    assert e.value.status_code == 413
    assert e.value.code == "request_too_large"


def test_mid_stream_failure_raises_api_error(client: OpenAI):
    stream = client.chat.completions.create(
        model="gpt-5.1", messages=[{"role": "user", "content": "[[mock drop_after=3]] hi"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            received.append(chunk)
    assert received, "chunks before the failure were delivered"
    assert "broke in the middle of the stream" in e.value.message


def test_streams_keep_the_connection_alive(stack):
    """Two streamed requests over one HTTP/1.1 connection: streaming must not cost a reconnect."""
    import http.client
    import urllib.parse

    url = urllib.parse.urlparse(stack.gateway.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    body = json.dumps({"model": "gpt-5.1", "stream": True, "messages": HELLO})
    headers = {"authorization": f"Bearer {stack.key}", "content-type": "application/json"}
    conn.request("POST", "/v1/chat/completions", body, headers)
    first = conn.getresponse()
    assert first.getheader("connection") != "close"
    assert first.read().decode().rstrip().endswith("data: [DONE]")
    sock = conn.sock
    conn.request("POST", "/v1/chat/completions", body, headers)
    second = conn.getresponse()
    assert second.read().decode().rstrip().endswith("data: [DONE]")
    assert conn.sock is sock, "the connection was not reused"
    conn.close()
