"""The OpenAI Responses API through the official `openai` SDK, for a Responses-only model (served by an
`openai-responses` provider), a Chat Completions model, a Claude and a Gemini model: text, tools with a
function_call_output round trip, reasoning carried across turns, stream and non-stream, stored
conversations (`previous_response_id`), `/responses/compact`, and a Codex-style request sequence. The
mock upstream checks what the real APIs check (tool outputs answer earlier calls, reasoning comes back
with its `encrypted_content` byte-exact, Anthropic signatures match their thinking).
"""
from __future__ import annotations

import json

import anthropic
import httpx2 as httpx
import openai
import pytest

MODELS = ["gpt-5.3-codex", "gpt-5.1", "claude-up", "gemini-up", "claude-up-thinking"]
TOOLS = [{
    "type": "function", "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
REASONING = {"effort": "medium", "summary": "auto"}


def ask(client: openai.OpenAI, stream: bool, **kw):
    if not stream:
        return client.responses.create(**kw)
    with client.responses.stream(**kw) as s:
        for _ in s:
            pass
        return s.get_final_response()


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_text(client, model, stream):
    r = ask(client, stream, model=model, input="Say hello", instructions="Be brief.")
    assert r.status == "completed" and r.model == model
    assert r.output_text.startswith("Hello from the Switchyard mock upstream")
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_tools_and_reasoning_round_trip(client, model, stream):
    history = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = ask(client, stream, model=model, input=history, tools=TOOLS, reasoning=REASONING)
    kinds = [o.type for o in first.output]
    assert "reasoning" in kinds and kinds[-1] == "function_call", kinds
    call = first.output[-1]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"]
    reasoning = [o for o in first.output if o.type == "reasoning"]
    if model != "gpt-5.1":  # a Chat Completions upstream's reasoning is plain text, unsigned
        assert any(r.encrypted_content for r in reasoning)  # the provider's proof, carried for the next turn
    assert reasoning[0].summary and reasoning[0].summary[0].text
    # The next turn sends everything back (reasoning included), as Codex does with store=false.
    history += [o.model_dump(exclude_none=True) for o in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"})
    second = ask(client, stream, model=model, input=history, tools=TOOLS, reasoning=REASONING, store=False)
    assert second.status == "completed"
    assert "sunny, 21C" in second.output_text


def test_stream_events_are_well_formed(stack, client):
    for model in ["gpt-5.3-codex", "claude-up"]:
        raw = httpx.post(f"{stack.base_url}/responses", headers={"authorization": f"Bearer {stack.key}"}, timeout=30, json={
            "model": model, "input": "What is the weather in Paris?", "tools": TOOLS, "stream": True, "reasoning": REASONING})
        assert raw.status_code == 200
        events = [block for block in raw.text.split("\n\n") if block.strip()]
        types, sequence = [], []
        for block in events:
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            data = json.loads(lines["data"])
            assert lines["event"] == data["type"], block
            types.append(data["type"])
            sequence.append(data["sequence_number"])
        assert sequence == list(range(len(sequence))), model
        assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
        for expected in ["response.output_item.added", "response.reasoning_summary_text.delta", "response.function_call_arguments.delta",
                         "response.function_call_arguments.done", "response.output_item.done"]:
            assert expected in types, (model, expected)
        text = httpx.post(f"{stack.base_url}/responses", headers={"authorization": f"Bearer {stack.key}"}, timeout=30,
                          json={"model": model, "input": "hi", "stream": True}).text
        text_types = [json.loads(b.split("data: ", 1)[1])["type"] for b in text.split("\n\n") if "data: " in b]
        order = ["response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done", "response.completed"]
        assert [t for t in text_types if t in order] == sorted([t for t in text_types if t in order], key=order.index)


def test_chat_and_messages_clients_reach_a_responses_only_model(client, anthropic_client):
    r = client.chat.completions.create(model="gpt-5.3-codex", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content.startswith("Hello from") and r.usage.prompt_tokens > 0
    chunks = list(client.chat.completions.create(model="gpt-5.3-codex", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Hello from")
    tools = [{"name": "get_weather", "input_schema": TOOLS[0]["parameters"]}]
    thinking = {"type": "enabled", "budget_tokens": 2048}
    ask_weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    with anthropic_client.messages.stream(model="gpt-5.3-codex", max_tokens=200, messages=ask_weather, tools=tools, thinking=thinking) as s:
        first = s.get_final_message()
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    use = first.content[1]
    # The thinking block's signature carries OpenAI's encrypted reasoning back, byte-exact.
    second = anthropic_client.messages.create(model="gpt-5.3-codex", max_tokens=200, tools=tools, thinking=thinking, messages=ask_weather + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ])
    assert second.content[-1].text == "The tool returned: sunny"


def test_previous_response_id_continues_a_stored_conversation(stack, client):
    for model in ["gpt-5.3-codex", "claude-up"]:
        first = client.responses.create(model=model, input="[[mock words=3]] My name is Ada.", tools=TOOLS, tool_choice="none")
        second = client.responses.create(model=model, previous_response_id=first.id, input="What is my name?")
        assert second.status == "completed"
        sent = stack.last_upstream_request()["body"]
        assert "My name is Ada." in json.dumps(sent), "the stored turn did not reach the provider"
        # Streams are stored too, and chains continue.
        with client.responses.stream(model=model, previous_response_id=second.id, input="And again?") as s:
            third = s.get_final_response()
        fourth = client.responses.create(model=model, previous_response_id=third.id, input="Once more")
        assert "My name is Ada." in json.dumps(stack.last_upstream_request()["body"]) and fourth.status == "completed"
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="claude-up", previous_response_id="resp_nope", input="hi")
    assert e.value.code == "previous_response_not_found" and e.value.param == "previous_response_id"
    unstored = client.responses.create(model="claude-up", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="claude-up", previous_response_id=unstored.id, input="hi")


def test_stored_responses_belong_to_their_key(stack, client):
    from conftest import create_key

    first = client.responses.create(model="gpt-5.1", input="hi")
    other = create_key(stack.workdir, stack.config, name="other")["key"]
    with openai.OpenAI(base_url=stack.base_url, api_key=other, max_retries=0) as c:
        with pytest.raises(openai.NotFoundError):
            c.responses.create(model="gpt-5.1", previous_response_id=first.id, input="hi")


def test_compact(client):
    compacted = client.responses.compact(model="gpt-5.3-codex", input=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    assert compacted.object == "response.compaction" and compacted.output[-1].type == "compaction"
    assert compacted.usage.input_tokens > 0
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.compact(model="claude-up", input="hi")
    assert "Responses API" in e.value.message


def test_errors_in_openai_format(stack, client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="claude-up", input=[{"type": "mystery"}])
    assert "mystery" in e.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="hi")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="claude-up", input="hi", tools=[{"type": "web_search"}])
    assert "web_search" in e.value.message
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="claude-up", input="[[mock status=429 retry_after=30]] hi")
    # Failures after the stream started: an error event (same format) or response.failed (translated).
    for model, terminal in [("gpt-5.3-codex", "error"), ("claude-up", "response.failed")]:
        raw = httpx.post(f"{stack.base_url}/responses", headers={"authorization": f"Bearer {stack.key}"}, timeout=30,
                         json={"model": model, "input": "[[mock drop_after=4]] talk to me", "stream": True})
        last = [json.loads(b.split("data: ", 1)[1]) for b in raw.text.split("\n\n") if "data: " in b][-1]
        assert last["type"] == terminal, (model, last)
        with pytest.raises((openai.APIError, RuntimeError)):  # the SDK reports the failed stream either way
            with client.responses.stream(model=model, input="[[mock drop_after=4]] talk to me") as s:
                for _ in s:
                    pass
                s.get_final_response()


@pytest.mark.parametrize("model", MODELS)
def test_codex_style_sequence_ends_with_response_completed(stack, model):
    """What Codex sends: instructions, function tools, reasoning with encrypted content, store false,
    streaming, and the whole conversation each turn (its own reasoning items included)."""
    headers = {"authorization": f"Bearer {stack.key}", "originator": "codex_cli_rs", "session_id": "s-1"}
    base = {
        "model": model, "instructions": "You are a coding agent.", "tools": [
            {"type": "function", "name": "shell", "description": "Runs a command", "strict": False,
             "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"]}},
        ],
        "tool_choice": "auto", "parallel_tool_calls": False, "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False, "stream": True, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "s-1",
    }
    conversation = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List the files"}]}]

    def turn():
        raw = httpx.post(f"{stack.base_url}/responses", headers=headers, timeout=30, json={**base, "input": conversation})
        assert raw.status_code == 200, raw.text
        events = [json.loads(b.split("data: ", 1)[1]) for b in raw.text.split("\n\n") if "data: " in b]
        assert events[-1]["type"] == "response.completed", events[-1]
        return [e["item"] for e in events if e["type"] == "response.output_item.done"]

    items = turn()
    call = items[-1]
    assert call["type"] == "function_call" and call["name"] == "shell"
    conversation += items + [{"type": "function_call_output", "call_id": call["call_id"], "output": "README.md\nPackage.swift"}]
    final = turn()
    message = [i for i in final if i["type"] == "message"][-1]
    assert "README.md" in message["content"][0]["text"]
