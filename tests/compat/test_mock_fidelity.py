"""The mock upstream must be a faithful fake: each official SDK, pointed straight at it (no gateway),
must accept its replies in that provider's wire format, streamed and not, with tools and thinking."""
from __future__ import annotations

import anthropic
import pytest
from google import genai
from google.genai import types
from openai import OpenAI

from clients import WEATHER


def test_openai_sdk_accepts_the_mock(stack):
    with OpenAI(base_url=stack.mock.url + "/v1", api_key="x", max_retries=0) as c:
        with c.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}],
                                       tools=[{"type": "function", "function": WEATHER}], stream_options={"include_usage": True}) as s:
            final = s.get_final_completion()
        assert final.choices[0].message.tool_calls[0].function.name == "get_weather"
        assert final.usage.total_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_accepts_the_mock(stack, stream):
    with anthropic.Anthropic(base_url=stack.mock.url, api_key="upstream-secret", max_retries=0) as c:
        kwargs = dict(model="claude-sonnet-4-6", max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 1024},
                      messages=[{"role": "user", "content": "weather?"}],
                      tools=[{"name": "get_weather", "input_schema": WEATHER["parameters"]}])
        if stream:
            with c.messages.stream(**kwargs) as s:
                message = s.get_final_message()
        else:
            message = c.messages.create(**kwargs)
    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    assert message.content[0].signature and message.content[1].input == {"city": "mock", "unit": "c"}
    assert message.stop_reason == "tool_use" and message.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_genai_sdk_accepts_the_mock(stack, stream):
    c = genai.Client(api_key="upstream-secret", http_options={"base_url": stack.mock.url, "api_version": "v1beta"})
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=1024),
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather", parameters_json_schema=WEATHER["parameters"])])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    if stream:
        parts = []
        for chunk in c.models.generate_content_stream(model="gemini-3.1-pro", contents="weather?", config=config):
            parts += chunk.candidates[0].content.parts or []
    else:
        parts = c.models.generate_content(model="gemini-3.1-pro", contents="weather?", config=config).candidates[0].content.parts
    thoughts = [p for p in parts if p.thought]
    calls = [p for p in parts if p.function_call]
    assert thoughts and calls[0].function_call.name == "get_weather"
    assert calls[0].thought_signature  # Gemini 3 signs the first call
    c.close()
