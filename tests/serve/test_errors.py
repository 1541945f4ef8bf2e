"""Every refusal of the real server in OpenAI's error shape (``{"error": {"message", "type",
"param", "code"}}``) with its status and the field it names: malformed JSON, wrong types,
out-of-range values, missing fields, prompt plus max_tokens past the context, unknown model
ids, routes the family cannot serve, a model without a chat template, the API key, the body
size limit; and ``attnlab serve``'s own command-line errors."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import openai
import pytest
from serve_helpers import API_KEY, env, free_port

MODEL = "tiny-decoder"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": MODEL, "prompt": "hi"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _error(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"] and "\n" not in body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(
    ("route", "body", "status", "param"),
    [
        ("chat/completions", {**CHAT, "model": None}, 400, "model"),
        ("chat/completions", {**CHAT, "model": "gpt-4"}, 404, "model"),
        ("chat/completions", {"model": MODEL}, 400, "messages"),
        ("chat/completions", {**CHAT, "messages": "hi"}, 400, "messages"),
        ("chat/completions", {**CHAT, "messages": []}, 400, "messages"),
        (
            "chat/completions",
            {**CHAT, "messages": [{"role": "x", "content": "a"}]},
            400,
            "messages[0].role",
        ),
        (
            "chat/completions",
            {**CHAT, "messages": [{"role": "user", "content": 3}]},
            400,
            "messages[0].content",
        ),
        ("chat/completions", {**CHAT, "temperature": "hot"}, 400, "temperature"),
        ("chat/completions", {**CHAT, "temperature": 2.5}, 400, "temperature"),
        ("chat/completions", {**CHAT, "top_p": 0}, 400, "top_p"),
        ("chat/completions", {**CHAT, "top_k": -1}, 400, "top_k"),
        ("chat/completions", {**CHAT, "min_p": 1.5}, 400, "min_p"),
        ("chat/completions", {**CHAT, "repetition_penalty": 0}, 400, "repetition_penalty"),
        ("chat/completions", {**CHAT, "n": 0}, 400, "n"),
        ("chat/completions", {**CHAT, "n": 1.5}, 400, "n"),
        ("chat/completions", {**CHAT, "seed": -1}, 400, "seed"),
        ("chat/completions", {**CHAT, "stream": "yes"}, 400, "stream"),
        (
            "chat/completions",
            {**CHAT, "stream_options": {"include_usage": True}},
            400,
            "stream_options",
        ),
        (
            "chat/completions",
            {**CHAT, "stream": True, "stream_options": {"include_usage": 1}},
            400,
            "stream_options.include_usage",
        ),
        ("chat/completions", {**CHAT, "max_tokens": 0}, 400, "max_tokens"),
        ("chat/completions", {**CHAT, "max_tokens": 95}, 400, "max_tokens"),
        ("chat/completions", {**CHAT, "max_completion_tokens": 500}, 400, "max_completion_tokens"),
        ("chat/completions", {**CHAT, "top_logprobs": 2}, 400, "top_logprobs"),
        ("chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
        ("chat/completions", {**CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ("chat/completions", {**CHAT, "stop": 3}, 400, "stop"),
        ("chat/completions", {**CHAT, "presence_penalty": 1.0}, 400, "presence_penalty"),
        ("completions", {"model": MODEL}, 400, "prompt"),
        ("completions", {**COMPLETION, "prompt": [[1, 2, 99999]]}, 400, "prompt"),
        ("completions", {**COMPLETION, "prompt": {"a": 1}}, 400, "prompt"),
        ("completions", {**COMPLETION, "prompt": "hi " * 200}, 400, "prompt"),
        ("completions", {**COMPLETION, "max_tokens": 1000}, 400, "max_tokens"),
        ("completions", {**COMPLETION, "logprobs": 50}, 400, "logprobs"),
        ("completions", {**COMPLETION, "echo": True}, 400, "echo"),
        ("attention", {"input": "a", "layer": 7}, 400, "layer"),
        ("attention", {"input": "a", "prompt": "b"}, 400, "prompt"),
        ("attention", {"input": 4}, 400, "input"),
        ("attention", {"input": "a", "model": "nope"}, 404, "model"),
    ],
)
def test_bad_fields_name_their_param(decoder, route, body, status, param) -> None:
    r = httpx.post(f"{decoder.v1}/{route}", json=body, timeout=30)
    assert r.status_code == status, r.text
    error = _error(r)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_context_errors_say_how_much_fits(decoder) -> None:
    r = httpx.post(f"{decoder.v1}/completions", json={**COMPLETION, "max_tokens": 1000})
    error = _error(r)
    assert error["code"] == "context_length_exceeded"
    assert "96" in error["message"]


def test_the_client_raises_with_param(decoder) -> None:
    client = decoder.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=CHAT["messages"], temperature=9)
    assert caught.value.param == "temperature"
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=CHAT["messages"])
    assert caught.value.param == "model" and caught.value.code == "model_not_found"


def test_malformed_json_and_non_objects(decoder) -> None:
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        r = httpx.post(
            f"{decoder.v1}/chat/completions",
            content=raw,
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400
        assert _error(r)["param"] is None


@pytest.mark.parametrize(
    ("server", "route", "family"),
    [
        ("decoder", "embeddings", "decoder"),
        ("decoder", "translate", "decoder"),
        ("decoder", "classify", "decoder"),
        ("minilm", "chat/completions", "encoder"),
        ("minilm", "completions", "encoder"),
        ("minilm", "classify", "encoder"),  # MiniLM has no classifier head
        ("translator", "chat/completions", "encoder_decoder"),
        ("translator", "embeddings", "encoder_decoder"),
        ("classifier", "translate", "encoder"),
    ],
)
def test_a_route_the_family_cannot_serve_names_it(request, server, route, family) -> None:
    served = request.getfixturevalue(server)
    body = {"model": "x", "input": "a", "messages": CHAT["messages"], "prompt": "a"}
    r = httpx.post(f"{served.v1}/{route}", json=body)
    assert r.status_code == 404
    assert f"its family is {family}" in _error(r)["message"]


def test_a_decoder_without_chat_template_refuses_chat(keyed) -> None:
    r = httpx.post(f"{keyed.v1}/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 400
    error = _error(r)
    assert error["param"] == "messages" and "no chat template" in error["message"]
    # raw completions still work
    r = httpx.post(f"{keyed.v1}/completions", json={**COMPLETION, "max_tokens": 2}, headers=AUTH)
    assert r.status_code == 200


def test_unknown_routes_and_methods(decoder) -> None:
    r = httpx.get(decoder.url + "/v2/nothing")
    assert r.status_code == 404 and _error(r)["type"] == "not_found_error"
    r = httpx.get(decoder.v1 + "/chat/completions")
    assert r.status_code == 405 and _error(r)


def test_api_key_on_every_route_but_health(keyed) -> None:
    assert httpx.get(keyed.url + "/health").status_code == 200
    for method, path in (
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("POST", "/v1/completions"),
        ("POST", "/tokenize"),
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
            r = httpx.request(method, keyed.url + path, json=COMPLETION, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert _error(r)["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        keyed.client(api_key="wrong").models.list()
    assert keyed.client(api_key=API_KEY).models.list().data[0].id == MODEL


def test_bodies_over_the_limit_are_413(keyed) -> None:
    big = {**COMPLETION, "prompt": "x" * 2000}  # --max-body-kb 1
    r = httpx.post(keyed.v1 + "/completions", json=big, headers=AUTH)
    assert r.status_code == 413 and _error(r)["code"] == "body_too_large"

    def chunks():  # no Content-Length: counted while read
        yield b'{"model": "tiny-decoder", "prompt": "'
        for _ in range(40):
            yield b"y" * 100
        yield b'"}'

    r = httpx.post(keyed.v1 + "/completions", content=chunks(), headers=AUTH)
    assert r.status_code == 413


def test_the_metrics_count_requests_by_route_and_status(keyed) -> None:
    httpx.post(keyed.v1 + "/completions", json={**COMPLETION, "n": 0}, headers=AUTH)
    metrics = httpx.get(keyed.url + "/metrics", headers=AUTH).text
    assert 'attnlab_requests_total{route="/v1/completions",status="400"}' in metrics
    assert 'attnlab_requests_total{route="/v1/models",status="401"}' in metrics
    for name in (
        "attnlab_prompt_tokens_total",
        "attnlab_completion_tokens_total",
        "attnlab_queue_depth",
        "attnlab_running_batch",
        "attnlab_time_to_first_token_seconds_bucket",
        "attnlab_inter_token_latency_seconds_bucket",
    ):
        assert name in metrics


def test_one_log_line_per_request(keyed) -> None:
    r = httpx.post(keyed.v1 + "/completions", json={**COMPLETION, "max_tokens": 3}, headers=AUTH)
    request_id = r.headers["x-request-id"]
    usage = r.json()["usage"]
    lines = [line for line in keyed.output().splitlines() if line.startswith(request_id)]
    assert len(lines) == 1
    words = lines[0].split()
    assert words[1:4] == ["POST", "/v1/completions", "200"]
    assert words[4] == f"tokens={usage['prompt_tokens']}+{usage['completion_tokens']}"
    assert words[-1] == "ms"


def _serve_together(*commands: list[str]) -> list[tuple[int, str]]:
    """``attnlab serve`` with each argument list, the processes side by side (each pays its
    own Python and torch start): [(exit status, standard error)] in order."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "attnlab.cli", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        for args in commands
    ]
    results = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        results.append((proc.returncode, err))
    return results


def test_serve_command_line_errors(tmp_path) -> None:
    key = tmp_path / "key"
    key.write_text("\n")
    with socket.socket() as taken:  # a port in use: one line, exit 1
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        missing, keyless, busy = _serve_together(
            [str(tmp_path / "missing"), "--port", str(free_port())],
            ["x", "--api-key-file", str(key)],
            [str(tmp_path / "missing"), "--port", str(port)],
        )
    assert missing[0] == 1
    assert "attnlab serve: error: no such run folder" in missing[1]
    assert keyless[0] == 1
    assert f"attnlab serve: error: {key} holds no API key" in keyless[1]
    assert busy[0] == 1
    assert f"attnlab serve: error: could not listen on 127.0.0.1:{port}" in busy[1]
