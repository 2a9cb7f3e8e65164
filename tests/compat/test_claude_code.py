"""Claude Code conformance: a recorded-shape Claude Code request sequence replayed through the gateway
to a GPT, a Gemini and a Claude model, with every response checked the way Claude Code's own stream
accumulator checks it (it throws on a delta before its block start, a delta of the wrong type for its
block, or events without an `event:` line, and it ends at `message_stop`, not `[DONE]`).

The sequence follows Claude Code 2.1.x: a haiku quota probe, a main turn with tools (schemas with
`$schema`, `additionalProperties`, `exclusiveMinimum`), thinking, cache-controlled system blocks and
unknown fields (`context_management`), a follow-up with the signed thinking echoed back, a tool result and
a mid-conversation system message, and count_tokens. Paths carry `?beta=true`.
"""
from __future__ import annotations

import http.client
import json
import urllib.parse

import pytest

MAIN_MODELS = ["claude-up", "gpt-5.1", "gemini-up"]
BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,mid-conversation-system-2026-04-07,prompt-caching-scope-2026-01-05"

SYSTEM = [
    {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.283.abc; cc_entrypoint=cli; cch=00000;"},
    {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": {"type": "ephemeral"}},
    {"type": "text", "text": "\nYou are an interactive CLI tool that helps users with software engineering tasks.", "cache_control": {"type": "ephemeral"}},
]
TOOLS = [{
    "name": "Read",
    "description": "Reads a file from the local filesystem.",
    "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "file_path": {"type": "string", "description": "The absolute path to the file to read"},
            "limit": {"type": "integer", "exclusiveMinimum": 0, "maximum": 9007199254740991},
        },
        "required": ["file_path"],
        "additionalProperties": False,
    },
}]
FIRST_USER = {"role": "user", "content": [
    {"type": "text", "text": "<system-reminder>\nAs you answer the user's questions, you can use the following context:\n# claudeMd\n</system-reminder>"},
    {"type": "text", "text": "Read README.md", "cache_control": {"type": "ephemeral"}},
]}


class Gateway:
    def __init__(self, url: str, key: str):
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.key = key

    def headers(self, betas: str | None = BETAS) -> dict:
        h = {
            "content-type": "application/json", "accept": "application/json", "anthropic-version": "2023-06-01",
            "x-app": "cli", "user-agent": "claude-cli/2.1.283 (external, cli)", "authorization": f"Bearer {self.key}",
            "anthropic-dangerous-direct-browser-access": "true", "x-stainless-lang": "js",
        }
        if betas:
            h["anthropic-beta"] = betas
        return h

    def post(self, path: str, body: dict, betas: str | None = BETAS) -> tuple[int, dict, str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.request("POST", path, json.dumps(body), self.headers(betas))
        r = conn.getresponse()
        text = r.read().decode()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, text


def parse_claude_code_stream(raw: str) -> dict:
    """Claude Code's accumulator, strictly: returns the final message or raises AssertionError."""
    frames = [f for f in raw.replace("\r\n", "\n").split("\n\n") if f.strip()]
    assert "[DONE]" not in raw, "Anthropic streams end at message_stop, not [DONE]"
    message = None
    blocks: dict[int, dict] = {}
    open_blocks: set[int] = set()
    json_buffers: dict[int, str] = {}
    stopped = False
    for frame in frames:
        event, data = None, None
        for line in frame.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
        assert event is not None, f"frame without an event: line is dropped by Claude Code: {frame!r}"
        payload = json.loads(data)
        assert payload["type"] == event, f"event {event} carries data.type {payload['type']}"
        if event == "ping":
            continue
        if event == "error":
            raise AssertionError(f"stream error: {payload}")
        if event == "message_start":
            assert message is None
            message = payload["message"]
            assert message["content"] == [] and "usage" in message and "input_tokens" in message["usage"]
        elif event == "content_block_start":
            assert message is not None
            i = payload["index"]
            assert i == len(blocks), f"block index {i} is not the next in start order"
            blocks[i] = dict(payload["content_block"])
            open_blocks.add(i)
            json_buffers[i] = ""
        elif event == "content_block_delta":
            i = payload["index"]
            assert i in open_blocks, "Content block not found (delta before its start or after its stop)"
            kind = blocks[i]["type"]
            delta = payload["delta"]
            expected = {"text_delta": "text", "input_json_delta": "tool_use", "thinking_delta": "thinking", "signature_delta": "thinking"}[delta["type"]]
            assert kind == expected, f"{delta['type']} on a {kind} block"
            if delta["type"] == "text_delta":
                blocks[i]["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                blocks[i]["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                blocks[i]["signature"] = delta["signature"]
            else:
                json_buffers[i] += delta["partial_json"]
        elif event == "content_block_stop":
            i = payload["index"]
            assert i in open_blocks
            open_blocks.discard(i)
            if blocks[i]["type"] == "tool_use":
                blocks[i]["input"] = json.loads(json_buffers[i] or "{}")
        elif event == "message_delta":
            assert not open_blocks, "message_delta while blocks are open"
            message["stop_reason"] = payload["delta"]["stop_reason"]
            message["usage"].update({k: v for k, v in payload["usage"].items() if v or k == "output_tokens"})
        elif event == "message_stop":
            stopped = True
    assert stopped, "no message_stop"
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message


@pytest.fixture()
def gw(stack):
    return Gateway(stack.gateway.url, stack.key)


def test_quota_probe(gw):
    status, headers, text = gw.post("/v1/messages?beta=true", {"model": "claude-haiku-4-5-20251001", "max_tokens": 1, "messages": [{"role": "user", "content": "quota"}]}, betas=None)
    assert status == 200, text
    body = json.loads(text)
    assert body["type"] == "message" and body["model"] == "claude-haiku-4-5-20251001"
    assert headers.get("request-id")


@pytest.mark.parametrize("model", MAIN_MODELS)
def test_session(gw, stack, model):
    main = {
        "model": model, "max_tokens": 32000, "stream": True, "system": SYSTEM, "messages": [FIRST_USER], "tools": TOOLS,
        "metadata": {"user_id": json.dumps({"device_id": "0" * 64, "account_uuid": "", "session_id": "s-1"})},
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    }
    status, headers, text = gw.post("/v1/messages?beta=true", main)
    assert status == 200, text
    assert headers["content-type"].startswith("text/event-stream")
    first = parse_claude_code_stream(text)
    assert first["model"] == model
    assert first["stop_reason"] == "tool_use"
    kinds = [b["type"] for b in first["content"]]
    assert kinds[0] == "thinking" and kinds[-1] == "tool_use"
    tool = first["content"][-1]
    assert tool["name"] == "Read" and tool["input"] == {"file_path": "mock"}
    assert first["usage"]["output_tokens"] > 0 and first["usage"]["input_tokens"] > 0
    if model == "claude-up":
        # Same-format traffic passes through: the beta flags reach Anthropic unchanged, unknown fields too.
        seen = stack.last_upstream_request()
        assert seen["headers"]["anthropic-beta"] == BETAS
        assert seen["body"]["context_management"] == main["context_management"]
        assert seen["body"]["tools"][0]["input_schema"]["$schema"]
    if model == "gemini-up":
        schema = stack.last_upstream_request()["body"]["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]
        assert "$schema" not in schema and schema["additionalProperties"] is False

    # Follow-up: the assistant turn echoed as received (signed thinking included), the tool result,
    # then a mid-conversation system message, as Claude Code 2.1.154+ sends it.
    follow = dict(main)
    follow["messages"] = [
        FIRST_USER,
        {"role": "assistant", "content": [{k: v for k, v in b.items() if k != "citations"} for b in first["content"]]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool["id"], "content": "     1\t# acme\n", "cache_control": {"type": "ephemeral"}}]},
        {"role": "system", "content": [{"type": "text", "text": "<MCP server instructions>"}]},
    ]
    status, _, text = gw.post("/v1/messages?beta=true", follow)
    assert status == 200, text
    second = parse_claude_code_stream(text)
    assert second["stop_reason"] == "end_turn"
    assert "The tool returned:" in "".join(b.get("text", "") for b in second["content"])

    # count_tokens, as Claude Code calls it (no system), never a 404.
    status, _, text = gw.post("/v1/messages/count_tokens?beta=true", {"model": model, "messages": follow["messages"][:3], "tools": TOOLS, "thinking": main["thinking"]})
    assert status == 200, text
    assert json.loads(text)["input_tokens"] > 0


def test_model_discovery_list(gw, stack):
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
    conn.request("GET", "/v1/models?limit=1000", headers=gw.headers())
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 200
    assert all(m["type"] == "model" and m["display_name"] for m in body["data"])
    assert body["has_more"] is False and body["first_id"] == body["data"][0]["id"]
