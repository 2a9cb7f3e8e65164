"""Every client API × every provider type, streamed and not, through the official SDKs.

Clients: the `openai` SDK (Chat Completions), the `anthropic` SDK (Messages), the `google-genai` SDK
(generateContent). Providers: an OpenAI-compatible, an Anthropic and a Gemini upstream (all served by
`switchyard mock-upstream`, which checks what the real APIs check: tool results right after the calls,
thinking signatures byte-exact, Gemini 3 thought signatures, schema keywords).
"""
from __future__ import annotations

import base64
import json

import anthropic
import openai
import pytest
from google.genai import errors as genai_errors

from clients import AnthropicAdapter, GeminiAdapter, OpenAIAdapter

MODELS = ["gpt-5.1", "claude-up", "gemini-up"]
CLIENTS = ["openai", "anthropic", "gemini"]
UPSTREAM_MODEL = {"gpt-5.1": "mock-gpt-5.1-2025", "claude-up": "claude-sonnet-4-6", "gemini-up": "gemini-3.1-pro"}


@pytest.fixture()
def adapters(client, anthropic_client, genai_client):
    return {"openai": OpenAIAdapter(client), "anthropic": AnthropicAdapter(anthropic_client), "gemini": GeminiAdapter(genai_client)}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("who", CLIENTS)
def test_text(adapters, who, model, stream):
    turn = adapters[who].ask(model, "Hello there, gateway!", system="Answer briefly.", stream=stream)
    assert turn.text == "Hello from the Switchyard mock upstream. You said: Hello there, gateway!"
    assert turn.finish == "stop"
    assert turn.model == model  # the client-facing name, whatever the provider calls it
    assert turn.input_tokens and turn.input_tokens > 0
    assert turn.output_tokens == len(turn.text.split())  # the mock counts one token per word


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("who", CLIENTS)
def test_system_prompt_and_history_reach_the_provider_in_its_format(adapters, stack, who, model):
    a = adapters[who]
    first = a.ask(model, "first question", system="SYSTEM-MARKER-42")
    a.ask(model, "second question", history=first.history, system="SYSTEM-MARKER-42")
    seen = stack.last_upstream_request()
    body = seen["body"]
    if model == "gpt-5.1":
        assert body["model"] == UPSTREAM_MODEL[model]
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["system", "user", "assistant", "user"]
        assert body["messages"][0]["content"] == "SYSTEM-MARKER-42"
    elif model == "claude-up":
        assert body["model"] == UPSTREAM_MODEL[model]
        assert "SYSTEM-MARKER-42" in json.dumps(body["system"])
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert body["max_tokens"] > 0
        assert seen["headers"]["x-api-key"] == "upstream-secret"
    else:
        assert seen["path"] == f"/v1beta/models/{UPSTREAM_MODEL[model]}:generateContent"
        assert body["systemInstruction"]["parts"][0]["text"] == "SYSTEM-MARKER-42"
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
        assert seen["headers"]["x-goog-api-key"] == "upstream-secret"
    # The client's key never goes upstream.
    assert stack.key not in json.dumps(seen)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("who", CLIENTS)
def test_tool_call_round_trip(adapters, who, model, stream):
    a = adapters[who]
    call = a.ask(model, "What's the weather in Paris?", tools=True, stream=stream)
    assert call.finish == "tool_calls"
    assert len(call.tool_calls) == 1
    tid, name, args = call.tool_calls[0]
    assert name == "get_weather"
    assert args == {"city": "mock", "unit": "c"}  # exact JSON, assembled by the SDK from streamed fragments
    assert tid  # ids are preserved and usable for the result
    done = a.answer_tools(model, call, "18 degrees and sunny", stream=stream)
    assert done.finish == "stop"
    assert "The tool returned: 18 degrees and sunny" in done.text


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("who", CLIENTS)
def test_thinking_survives_tool_turns(adapters, who, model, stream):
    """Reasoning reaches every client, and the provider's signatures come back byte-exact on the next
    turn (the mock rejects a missing or altered Anthropic signature and a missing Gemini 3 signature)."""
    a = adapters[who]
    call = a.ask(model, "Weather in Oslo?", tools=True, thinking=True, stream=stream)
    assert call.thinking.startswith("Considering the request")
    assert call.finish == "tool_calls"
    done = a.answer_tools(model, call, "cold", thinking=True, stream=stream)
    assert "The tool returned: cold" in done.text


@pytest.mark.parametrize("who", CLIENTS)
def test_model_defaults_turn_thinking_on(adapters, who):
    turn = adapters[who].ask("claude-up-thinking", "Think please")
    assert turn.thinking.startswith("Considering the request")


def test_anthropic_client_tool_choice_and_parallel_flag_reach_openai(anthropic_client, stack):
    anthropic_client.messages.create(
        model="gpt-5.1", max_tokens=100, messages=[{"role": "user", "content": "x"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    body = stack.last_upstream_request()["body"]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False


def test_image_inline_reaches_every_provider(client, stack):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
    content = [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]
    client.chat.completions.create(model="claude-up", messages=[{"role": "user", "content": content}])
    body = stack.last_upstream_request()["body"]
    assert body["messages"][0]["content"][1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    client.chat.completions.create(model="gemini-up", messages=[{"role": "user", "content": content}])
    body = stack.last_upstream_request()["body"]
    assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": png}}


def test_image_url_is_fetched_for_gemini(client, stack):
    # Gemini takes only inline data: the gateway fetches the URL (here the mock's own stats page is a
    # stand-in image server is not needed — any reachable URL with an image type would do).
    import http.server
    import threading

    png = b"\x89PNG\r\n\x1a\n" + b"\x01" * 32

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cat.png"
        client.chat.completions.create(model="gemini-up", messages=[{"role": "user", "content": [
            {"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": url}}]}])
        part = stack.last_upstream_request()["body"]["contents"][0]["parts"][1]
        assert part == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}}
        # Anthropic takes URLs itself: passed on, not fetched.
        client.chat.completions.create(model="claude-up", messages=[{"role": "user", "content": [
            {"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": url}}]}])
        block = stack.last_upstream_request()["body"]["messages"][0]["content"][1]
        assert block == {"type": "image", "source": {"type": "url", "url": url}}
    finally:
        server.shutdown()


@pytest.mark.parametrize("model", MODELS)
def test_structured_output(client, model):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "reply in json"}],
        response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}},
    )
    if model == "claude-up":
        # Anthropic answers through a forced tool; the client sees the JSON as text.
        assert json.loads(completion.choices[0].message.content) == {"answer": "mock"}
        assert completion.choices[0].finish_reason == "stop"
    else:
        assert completion.choices[0].message.content


def test_openai_n_above_one_to_anthropic_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="claude-up", messages=[{"role": "user", "content": "x"}], n=2)
    assert "`n` > 1 is not supported" in e.value.message


# --- errors in each client's own format -----------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_client_errors(anthropic_client, stack, model):
    with pytest.raises(anthropic.RateLimitError) as e:
        anthropic_client.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "[[mock status=429 retry_after=2]]"}])
    assert e.value.response.headers.get("retry-after") == "2"
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "rate_limit_error"
    assert e.value.request_id  # the gateway's id, in `request-id`
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "[[mock status=400 message=nope]]"}])
    with pytest.raises(anthropic.InternalServerError):
        anthropic_client.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "[[mock status=500]]"}])


def test_anthropic_client_gateway_errors(anthropic_client, stack):
    import anthropic as a

    with a.Anthropic(base_url=stack.gateway.url, api_key="sy-wrong", max_retries=0) as bad:
        with pytest.raises(a.AuthenticationError) as e:
            bad.messages.create(model="claude-up", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        assert e.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(a.NotFoundError) as e:
        anthropic_client.messages.create(model="claude-nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(a.BadRequestError) as e:
        anthropic_client.messages.create(model="claude-up", max_tokens=10, messages="not a list")  # type: ignore[arg-type]
    assert e.value.body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("model", MODELS)
def test_gemini_client_errors(genai_client, model):
    with pytest.raises(genai_errors.ClientError) as e:
        genai_client.models.generate_content(model=model, contents="[[mock status=429]]")
    assert e.value.code == 429 and e.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(genai_errors.ServerError) as e:
        genai_client.models.generate_content(model=model, contents="[[mock status=503]]")
    assert e.value.code == 503


def test_gemini_client_bad_key_and_unknown_model(stack, genai_client):
    from google import genai

    bad = genai.Client(api_key="sy-wrong", http_options={"base_url": stack.gateway.url, "retry_options": {"attempts": 1}})
    with pytest.raises(genai_errors.ClientError) as e:
        bad.models.generate_content(model="gemini-up", contents="x")
    assert e.value.code == 401 and e.value.status == "UNAUTHENTICATED"
    with pytest.raises(genai_errors.ClientError) as e:
        genai_client.models.generate_content(model="gemini-nope", contents="x")
    assert e.value.code == 404 and e.value.status == "NOT_FOUND"


@pytest.mark.parametrize("who,model", [("openai", "claude-up"), ("openai", "gemini-up"), ("anthropic", "gpt-5.1"), ("anthropic", "gemini-up"), ("gemini", "claude-up"), ("gemini", "gpt-5.1")])
def test_mid_stream_failure_raises_in_every_sdk(adapters, who, model):
    with pytest.raises(Exception) as e:
        adapters[who].ask(model, "[[mock drop_after=4]] talk", stream=True)
    assert "middle of the stream" in str(e.value) or "ended the stream" in str(e.value) or "broke" in str(e.value)


# --- count_tokens, model lists, Claude Code's probes ------------------------------------------------


def test_count_tokens(anthropic_client, stack):
    messages = [{"role": "user", "content": "How many tokens is this sentence going to be counted as?"}]
    forwarded = anthropic_client.messages.count_tokens(model="claude-up", messages=messages)
    assert stack.last_upstream_request()["path"] == "/v1/messages/count_tokens"
    estimated = anthropic_client.messages.count_tokens(model="gpt-5.1", messages=messages)
    assert forwarded.input_tokens > 0 and 10 <= estimated.input_tokens <= 30


def test_anthropic_model_list(anthropic_client):
    ids = [m.id for m in anthropic_client.models.list()]
    assert "claude-up" in ids and "gpt-5.1" in ids


def test_gemini_model_list(genai_client):
    names = [m.name for m in genai_client.models.list()]
    assert "models/gemini-up" in names


def test_wildcard_models_route_background_calls(anthropic_client, stack):
    message = anthropic_client.messages.create(model="claude-haiku-4-5-20251001", max_tokens=1, messages=[{"role": "user", "content": "quota"}])
    assert message.model == "claude-haiku-4-5-20251001"
    assert stack.last_upstream_request()["body"]["model"] == "claude-haiku-4-5-20251001"


def test_head_root_answers_200(stack):
    import urllib.request

    req = urllib.request.Request(stack.gateway.url + "/", method="HEAD")
    with urllib.request.urlopen(req) as r:
        assert r.status == 200
