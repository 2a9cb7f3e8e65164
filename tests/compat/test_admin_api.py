"""The admin API matches its OpenAPI document (docs/openapi/admin.yaml), in both directions.

Every documented operation is called; every response must have a documented status and a body that
validates against the documented schema (which forbids undocumented fields); every request body the
test sends must validate against the documented request schema; and the document itself must be valid
OpenAPI 3.1.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

from conftest import ADMIN_KEY, ROOT, admin

SPEC_PATH = ROOT / "docs" / "openapi" / "admin.yaml"


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def schema_validator(spec: dict, schema: dict) -> Draft202012Validator:
    # `#/components/...` references resolve against a root that carries the components.
    return Draft202012Validator({**schema, "components": spec["components"]}, format_checker=Draft202012Validator.FORMAT_CHECKER)


class Checker:
    """Calls operations by their documented path template and checks each exchange against the document."""

    def __init__(self, spec: dict, base_url: str):
        self.spec = spec
        self.base_url = base_url
        self.called: set[tuple[str, str]] = set()

    def resolve(self, obj: dict) -> dict:
        while "$ref" in obj:
            node = self.spec
            for part in obj["$ref"].lstrip("#/").split("/"):
                node = node[part]
            obj = node
        return obj

    def __call__(self, method: str, template: str, params: dict | None = None, body=None, query: str = "",
                 expect: int | None = None, key: str = ADMIN_KEY) -> dict:
        operation = self.spec["paths"][template][method.lower()]
        if body is not None:
            request_schema = self.resolve(operation["requestBody"])["content"]["application/json"]["schema"]
            errors = list(schema_validator(self.spec, request_schema).iter_errors(body))
            if expect is None or expect < 400:
                assert not errors, f"{method} {template}: the test's own request does not match the document: {errors[0].message}"
        path = template.format(**(params or {})) + query
        status, headers, payload = admin(self.base_url, method, path, body, key=key)
        if expect is not None:
            assert status == expect, f"{method} {path}: expected {expect}, got {status}: {payload}"
        responses = operation["responses"]
        assert str(status) in responses, f"{method} {template} answered {status}, which the document does not list"
        response = self.resolve(responses[str(status)])
        schema = response["content"]["application/json"]["schema"]
        errors = sorted(schema_validator(self.spec, schema).iter_errors(payload), key=lambda e: e.path)
        assert not errors, f"{method} {template} {status}: body does not match the document: {errors[0].message} at {list(errors[0].path)}\n{payload}"
        assert headers.get("Content-Type", headers.get("content-type", "")).startswith("application/json")
        self.called.add((method.lower(), template))
        return payload


def test_the_document_is_valid_openapi(spec):
    validate_openapi(spec)


def test_every_documented_operation_behaves_as_documented(spec, accounts):
    call = Checker(spec, accounts.url)
    email = f"doc-{uuid.uuid4().hex[:8]}@example.com"

    # Users
    user = call("POST", "/users", body={"email": email, "plan": "pro"}, expect=201)
    assert user["plan"] == "pro" and user["kind"] == "person"
    call("POST", "/users", body={"email": email}, expect=409)
    call("POST", "/users", body={"email": "x@example.com", "plan": "gold"}, expect=400)
    call("POST", "/users", body={"email": "x@example.com", "nickname": "x"}, expect=400)
    call("GET", "/users", expect=200)
    call("GET", "/users/{user}", {"user": email}, expect=200)
    call("GET", "/users/{user}", {"user": user["id"]}, expect=200)
    call("GET", "/users/{user}", {"user": "nobody@example.com"}, expect=404)
    call("PATCH", "/users/{user}", {"user": email}, body={"plan": None}, expect=200)
    disabled = call("PATCH", "/users/{user}", {"user": email}, body={"disabled": True}, expect=200)
    assert disabled["status"] == "disabled" and disabled["plan"] == "free"
    call("PATCH", "/users/{user}", {"user": email}, body={"disabled": "yes"}, expect=400)
    call("PATCH", "/users/{user}", {"user": "nobody@example.com"}, body={"disabled": False}, expect=404)
    call("PATCH", "/users/{user}", {"user": email}, body={"disabled": False}, expect=200)

    # Keys
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    created = call("POST", "/keys", body={"name": "doc", "user": email, "expires_at": expires, "models": ["demo-mock"],
                                          "limits": {"requests_per_minute": 10, "concurrent_requests": None}}, expect=201)
    assert created["expires_at"] == expires and created["limits"] == {"requests_per_minute": 10}
    service = call("POST", "/keys", body={"name": "doc-service"}, expect=201)
    assert service["user"] == "service@switchyard.local"
    call("POST", "/keys", body={"name": "doc", "models": ["no-such-model"]}, expect=400)
    call("POST", "/keys", body={"name": ""}, expect=400)
    call("GET", "/keys", expect=200)
    only = call("GET", "/keys", query=f"?user={email}", expect=200)
    assert [k["id"] for k in only["data"]] == [created["id"]]
    call("GET", "/keys/{id}", {"id": created["id"]}, expect=200)
    call("GET", "/keys/{id}", {"id": "key_missing"}, expect=404)
    patched = call("PATCH", "/keys/{id}", {"id": created["id"]}, body={"name": "doc-2", "expires_at": None, "models": None, "limits": None}, expect=200)
    assert patched["expires_at"] is None and patched["models"] is None and patched["limits"] == {}
    call("PATCH", "/keys/{id}", {"id": created["id"]}, body={"limits": {"requests_per_hour": 5}}, expect=400)
    call("PATCH", "/keys/{id}", {"id": "key_missing"}, body={"name": "x"}, expect=404)
    rotated = call("POST", "/keys/{id}/rotate", {"id": created["id"]}, body={"grace": "1h"}, expect=200)
    assert rotated["key"] != created["key"]
    call("POST", "/keys/{id}/rotate", {"id": created["id"]}, body={"grace": "1y"}, expect=400)
    call("POST", "/keys/{id}/rotate", {"id": created["id"]}, expect=200)  # no body: grace 0
    call("POST", "/keys/{id}/rotate", {"id": "key_missing"}, expect=404)
    call("DELETE", "/keys/{id}", {"id": service["id"]}, expect=200)
    call("DELETE", "/keys/{id}", {"id": service["id"]}, expect=200)  # idempotent
    call("POST", "/keys/{id}/rotate", {"id": service["id"]}, expect=409)
    call("DELETE", "/keys/{id}", {"id": "key_missing"}, expect=404)

    # Credits, usage, codes, ledger
    granted = call("POST", "/users/{user}/credits", {"user": email}, body={"amount": 12.5, "note": "welcome", "idempotency_key": "doc-1"}, expect=201)
    assert granted["granted"]["kind"] == "topup" and granted["granted"]["amount"] == 12.5
    again = call("POST", "/users/{user}/credits", {"user": email}, body={"amount": "12.5", "idempotency_key": "doc-1"}, expect=201)
    assert again["balance"] == granted["balance"]  # the same key grants once
    call("POST", "/users/{user}/credits", {"user": email}, body={"amount": 1, "kind": "bonus", "expires_at": expires}, expect=201)
    call("POST", "/users/{user}/credits", {"user": email}, body={"amount": 1, "expires_at": expires}, expect=400)  # top-ups never expire
    call("POST", "/users/{user}/credits", {"user": email}, body={"amount": "1.0000001"}, expect=400)
    call("POST", "/users/{user}/credits", {"user": "nobody@example.com"}, body={"amount": 1}, expect=404)
    balance = call("GET", "/users/{user}/credits", {"user": email}, expect=200)
    assert [b["kind"] for b in balance["buckets"]] == ["bonus", "topup"]
    call("GET", "/users/{user}/credits", {"user": "nobody@example.com"}, expect=404)
    history = call("GET", "/users/{user}/credits/history", {"user": email}, query="?limit=10", expect=200)
    assert {e["kind"] for e in history["data"]} == {"topup", "bonus"}
    call("GET", "/users/{user}/credits/history", {"user": "nobody@example.com"}, expect=404)
    call("GET", "/usage", expect=200)
    call("GET", "/usage", query=f"?user={email}&since=2026-01-01&limit=5", expect=200)
    call("GET", "/usage", query="?since=yesterday", expect=400)
    call("GET", "/usage", query="?user=nobody@example.com", expect=404)
    codes = call("POST", "/codes", body={"credits": 5, "count": 2, "expires_at": expires}, expect=201)
    assert len(codes["data"]) == 2
    call("POST", "/codes", body={"credits": 5, "count": 0}, expect=400)
    listed = call("GET", "/codes", expect=200)
    assert {c["id"] for c in codes["data"]} <= {c["id"] for c in listed["data"]}
    assert all(c["code"] not in str(listed) for c in codes["data"])
    check = call("GET", "/ledger/check", expect=200)
    assert check["consistent"] is True

    # Plans, counters, cache
    plans = call("GET", "/plans", expect=200)
    assert [p["name"] for p in plans["data"]] == ["free", "pro"]
    call("GET", "/plans/{name}", {"name": "pro"}, expect=200)
    call("GET", "/plans/{name}", {"name": "gold"}, expect=404)
    call("GET", "/counters", expect=200)
    call("GET", "/counters", query=f"?user={email}", expect=200)
    call("GET", "/counters", query=f"?key={created['id']}", expect=200)
    call("GET", "/counters", query="?user=nobody@example.com", expect=404)
    call("POST", "/cache/invalidate", expect=200)
    deployments = call("GET", "/deployments", expect=200)
    assert {"gpt-5.1#0", "claude-up#0"} <= {d["id"] for d in deployments["data"]}
    one = call("GET", "/deployments", query="?model=gpt-5.1", expect=200)
    assert [d["id"] for d in one["data"]] == ["gpt-5.1#0"] and one["data"][0]["state"] == "healthy"
    call("GET", "/deployments", query="?model=nope", expect=404)

    # Authentication is required everywhere.
    for method, template in [("GET", "/users"), ("POST", "/keys"), ("GET", "/plans"), ("POST", "/cache/invalidate")]:
        call(method, template, body={"name": "x"} if method == "POST" and template == "/keys" else None, expect=401, key="wrong-admin-key-000000")

    documented = {(m, p) for p, item in spec["paths"].items() for m in item if m in {"get", "post", "patch", "delete", "put"}}
    assert documented - call.called == set(), "documented operations the test did not call"


def test_undocumented_admin_paths_do_not_exist(spec, accounts):
    for method, path in [("GET", "/billing"), ("POST", "/plans"), ("DELETE", "/users/x@example.com"), ("PUT", "/keys/key_x")]:
        status, _, body = admin(accounts.url, method, path)
        assert status in (404, 405), f"{method} {path} answered {status}: {body}"
