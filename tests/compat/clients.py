"""One small adapter per official SDK, so a test can run the same conversation through each client API
and compare what each SDK hands back. Every adapter builds the follow-up turn the way a user of that SDK
would: from the objects the SDK returned (thinking blocks, thought signatures and all)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
}


@dataclass
class Turn:
    """What one SDK handed back, normalised."""

    text: str = ""
    tool_calls: list[tuple[str, str, dict]] = field(default_factory=list)  # (id, name, arguments)
    thinking: str = ""
    finish: str = ""  # stop | tool_calls | length
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str = ""
    history: list[Any] = field(default_factory=list)  # the conversation so far, in the SDK's own types


class OpenAIAdapter:
    name = "openai"

    def __init__(self, client):
        self.c = client

    def ask(self, model, text, *, system=None, stream=False, tools=False, thinking=False, history=None, extra=None) -> Turn:
        messages = list(history or [])
        if system and not messages:
            messages.append({"role": "system", "content": system})
        if text is not None:
            messages.append({"role": "user", "content": text})
        kwargs: dict = {"model": model, "messages": messages, "max_tokens": 2048}
        if tools:
            kwargs["tools"] = [{"type": "function", "function": WEATHER}]
        if thinking:
            kwargs["reasoning_effort"] = "low"
        if extra:
            kwargs.update(extra)
        if stream:
            with self.c.chat.completions.stream(**kwargs, stream_options={"include_usage": True}) as s:
                for _ in s:
                    pass
                completion = s.get_final_completion()
        else:
            completion = self.c.chat.completions.create(**kwargs)
        choice = completion.choices[0]
        msg = choice.message
        turn = Turn(
            text=msg.content or "",
            tool_calls=[(t.id, t.function.name, json.loads(t.function.arguments)) for t in (msg.tool_calls or [])],
            thinking=getattr(msg, "reasoning_content", None) or "",
            finish=choice.finish_reason,
            input_tokens=completion.usage.prompt_tokens if completion.usage else None,
            output_tokens=completion.usage.completion_tokens if completion.usage else None,
            model=completion.model,
        )
        # What a typical client keeps: role, content and tool calls (no reasoning fields).
        assistant: dict = {"role": "assistant", "content": msg.content}
        if msg.tool_calls:
            assistant["tool_calls"] = [
                {"id": t.id, "type": "function", "function": {"name": t.function.name, "arguments": t.function.arguments}}
                for t in msg.tool_calls
            ]
        turn.history = messages + [assistant]
        return turn

    def answer_tools(self, model, turn: Turn, result: str, **kw) -> Turn:
        history = turn.history + [{"role": "tool", "tool_call_id": tid, "content": result} for tid, _, _ in turn.tool_calls]
        return self.ask(model, None, history=history, tools=True, **kw)


class AnthropicAdapter:
    name = "anthropic"

    def __init__(self, client):
        self.c = client

    def ask(self, model, text, *, system=None, stream=False, tools=False, thinking=False, history=None, extra=None) -> Turn:
        messages = list(history or [])
        if text is not None:
            messages.append({"role": "user", "content": text})
        kwargs: dict = {"model": model, "messages": messages, "max_tokens": 4096}
        if system:
            kwargs["system"] = system
        if tools:
            kwargs["tools"] = [{"name": WEATHER["name"], "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}]
        if thinking:
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": 1024}
        if extra:
            kwargs.update(extra)
        if stream:
            with self.c.messages.stream(**kwargs) as s:
                for _ in s:
                    pass
                message = s.get_final_message()
        else:
            message = self.c.messages.create(**kwargs)
        turn = Turn(
            text="".join(b.text for b in message.content if b.type == "text"),
            tool_calls=[(b.id, b.name, dict(b.input)) for b in message.content if b.type == "tool_use"],
            thinking="".join(b.thinking for b in message.content if b.type == "thinking"),
            finish={"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}.get(message.stop_reason, message.stop_reason),
            input_tokens=message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) + (message.usage.cache_creation_input_tokens or 0),
            output_tokens=message.usage.output_tokens,
            model=message.model,
        )
        # The SDK's own blocks go back as they came (thinking signatures included).
        turn.history = messages + [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]}]
        return turn

    def answer_tools(self, model, turn: Turn, result: str, **kw) -> Turn:
        results = [{"type": "tool_result", "tool_use_id": tid, "content": result} for tid, _, _ in turn.tool_calls]
        return self.ask(model, None, history=turn.history + [{"role": "user", "content": results}], tools=True, **kw)


class GeminiAdapter:
    name = "gemini"

    def __init__(self, client):
        self.c = client

    def ask(self, model, text, *, system=None, stream=False, tools=False, thinking=False, history=None, extra=None) -> Turn:
        from google.genai import types

        contents = list(history or [])
        if text is not None:
            contents.append(types.Content(role="user", parts=[types.Part(text=text)]))
        config = types.GenerateContentConfig(max_output_tokens=2048, **(extra or {}))
        if system:
            config.system_instruction = system
        if tools:
            config.tools = [types.Tool(function_declarations=[types.FunctionDeclaration(
                name=WEATHER["name"], description=WEATHER["description"], parameters_json_schema=WEATHER["parameters"])])]
            config.automatic_function_calling = types.AutomaticFunctionCallingConfig(disable=True)
        if thinking:
            config.thinking_config = types.ThinkingConfig(include_thoughts=True, thinking_budget=1024)
        parts: list = []
        finish = None
        usage = None
        version = ""
        if stream:
            for chunk in self.c.models.generate_content_stream(model=model, contents=contents, config=config):
                cand = chunk.candidates[0] if chunk.candidates else None
                if cand and cand.content and cand.content.parts:
                    parts.extend(cand.content.parts)
                if cand and cand.finish_reason:
                    finish = cand.finish_reason
                usage = chunk.usage_metadata or usage
                version = chunk.model_version or version
        else:
            response = self.c.models.generate_content(model=model, contents=contents, config=config)
            cand = response.candidates[0]
            parts = list(cand.content.parts or [])
            finish, usage, version = cand.finish_reason, response.usage_metadata, response.model_version
        calls = [p.function_call for p in parts if p.function_call]
        turn = Turn(
            text="".join(p.text for p in parts if p.text and not p.thought),
            tool_calls=[(c.id or "", c.name, dict(c.args or {})) for c in calls],
            thinking="".join(p.text for p in parts if p.text and p.thought),
            finish="tool_calls" if calls else {"STOP": "stop", "MAX_TOKENS": "length"}.get(getattr(finish, "value", str(finish)), str(finish)),
            input_tokens=usage.prompt_token_count if usage else None,
            output_tokens=((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)) if usage else None,
            model=version,
        )
        # The model's content goes back as it came (thought signatures included).
        turn.history = contents + [types.Content(role="model", parts=parts)]
        return turn

    def answer_tools(self, model, turn: Turn, result: str, **kw) -> Turn:
        from google.genai import types

        responses = [types.Part(function_response=types.FunctionResponse(id=tid or None, name=name, response={"output": result}))
                     for tid, name, _ in turn.tool_calls]
        return self.ask(model, None, history=turn.history + [types.Content(role="user", parts=responses)], tools=True, **kw)
