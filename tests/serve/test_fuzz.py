"""Property-based fuzzing of the OpenAI-compatible server from its own OpenAPI document.

Schemathesis turns ``/openapi.json`` into Hypothesis strategies for every operation; each
generated request (schema-conforming and, for the request bodies, schema-violating) goes to
a real server over HTTP with a bounded timeout. Properties: no 5xx and no hang, responses
as documented (status, media type, error schema), schema-violating bodies refused with a
4xx, every stream ending in ``[DONE]`` without a server error, and afterwards ``/health``
still ok with every batch slot, admission and cache block given back.

The server is ``hcx serve``'s app with a small ``max_tokens`` (8), so each generated request
costs a few engine steps; the document states that bound, so conforming requests stay cheap
and larger ones must be refused. The seed is fixed, so every run sends the same requests:
100 schema-conforming and 50 schema-violating bodies per completion route, and the two
parameterless GET routes (one distinct case each), 302 requests in all. Each test records
its count and statuses (``record_property``; ``-s`` prints them).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.serve.live_server import API_KEY, GUARDED_MAX_TOKENS, SERVED_NAME, LiveServer

FUZZ_SEED = 20_240_917
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CLIENT_TIMEOUT_S = 30.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# (method, path, generation mode, examples): the request bodies get both kinds of data.
OPERATIONS = [
    ("POST", "/v1/chat/completions", GenerationMode.POSITIVE, 100),
    ("POST", "/v1/chat/completions", GenerationMode.NEGATIVE, 50),
    ("POST", "/v1/completions", GenerationMode.POSITIVE, 100),
    ("POST", "/v1/completions", GenerationMode.NEGATIVE, 50),
    ("GET", "/v1/models", GenerationMode.POSITIVE, 5),
    ("GET", "/health", GenerationMode.POSITIVE, 5),
]


@pytest.fixture(scope="module")
def openapi(guarded_server: LiveServer) -> schemathesis.BaseSchema:
    document = httpx.get(f"{guarded_server.url}/openapi.json", timeout=CLIENT_TIMEOUT_S).json()
    return schemathesis.openapi.from_dict(document)


def send(client: httpx.Client, case: schemathesis.Case) -> httpx.Response:
    """The generated request: JSON (ASCII-escaped: generated text may hold lone surrogates) or raw bytes."""
    headers = dict(case.headers or {})
    content = None
    if isinstance(case.body, bytes):
        content = case.body
        headers["Content-Type"] = case.media_type or "application/octet-stream"
    elif case.body is not NOT_SET:
        content = json.dumps(case.body).encode()
        headers["Content-Type"] = case.media_type or "application/json"
    path = case.path.format(**case.path_parameters)
    return client.request(case.method, path, params=case.query or None, headers=headers, content=content)


def check_body(response: httpx.Response) -> None:
    """Errors in the OpenAI shape with a message; streams end in [DONE] with no server error."""
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.endswith("data: [DONE]\n\n"), response.text[-300:]
        assert '"server_error"' not in response.text, response.text


@pytest.mark.parametrize(("method", "path", "mode", "examples"), OPERATIONS)
def test_fuzzed_requests_get_no_5xx_and_leave_nothing_behind(
    guarded_server: LiveServer,
    openapi: schemathesis.BaseSchema,
    caplog: pytest.LogCaptureFixture,
    record_property: Callable[[str, object], None],
    method: str,
    path: str,
    mode: GenerationMode,
    examples: int,
):
    """Each case: a bounded client timeout (no hang), Schemathesis' checks, the body checks."""
    caplog.set_level(logging.ERROR, logger="uvicorn.error")
    strategy = openapi[path][method].as_strategy(generation_mode=mode, headers=dict(AUTH))
    client = httpx.Client(base_url=guarded_server.url, timeout=CLIENT_TIMEOUT_S)
    sent: list[int] = []

    @seed(FUZZ_SEED)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: schemathesis.Case) -> None:
        response = send(client, case)
        sent.append(response.status_code)
        case.validate_response(response, checks=CHECKS)
        check_body(response)

    with client:
        fuzz()
    statuses = dict(sorted(Counter(sent).items()))
    record_property("fuzz_cases", len(sent))
    record_property("fuzz_statuses", statuses)
    print(f"\n{method} {path} {mode.value}: {len(sent)} cases, statuses {statuses}")
    assert sent and max(sent) < 500
    guarded_server.assert_all_freed()
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")], "the server logged an error"


def test_the_openapi_document_states_the_limits(openapi: schemathesis.BaseSchema):
    """What the fuzzer generates from: the served model, this server's max_tokens bound, bearer auth."""
    document = openapi.raw_schema
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        fields = document["components"]["schemas"][name]["properties"]
        bounded = {"type": "integer", "minimum": 0, "maximum": GUARDED_MAX_TOKENS}
        assert bounded in fields["max_tokens"]["anyOf"]
        assert fields["model"]["anyOf"][0] == {"const": SERVED_NAME}
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["security"] == [{"bearer": []}]
    assert {"200", "400", "401", "404", "413", "415", "429"} <= set(chat["responses"])
    assert "Retry-After" in chat["responses"]["429"]["headers"]
