"""The OpenAI-compatible server, started on a loopback port and driven by the official `openai`
client (completions, chat, streaming), by 32 concurrent streaming requests (each must get exactly
its own greedy completion), by bad requests (HTTP 400 with an OpenAI error body) and by a client
that leaves mid-stream (its blocks come back)."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from test_serve_engine import _char_llm  # noqa: E402

from tracegrad.serve import SamplingParams  # noqa: E402
from tracegrad.serve.loader import plain_chat  # noqa: E402
from tracegrad.serve.server import build_app  # noqa: E402

N_CONCURRENT = 32
PROMPTS = [f"{w} {i}" for i, w in enumerate(["to be", "or not", "that is", "the question"] * 8)]


@pytest.fixture(scope="module")
def served():
    offline, tok = _char_llm()
    outs = offline.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=8))
    want = {p: o.text for p, o in zip(PROMPTS, outs)}
    llm, _ = _char_llm(max_num_seqs=64)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(llm, "tiny"), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield dict(url=f"http://127.0.0.1:{port}", llm=llm, offline=offline, tok=tok, want=want)
    server.should_exit = True
    thread.join(timeout=10)


def _client(served):
    return openai.OpenAI(base_url=served["url"] + "/v1", api_key="none", timeout=60, max_retries=0)


def test_models_health_and_completions_through_the_openai_client(served):
    client = _client(served)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(served["url"] + "/health").status_code == 200
    r = client.completions.create(model="tiny", prompt="to be 0", max_tokens=8, temperature=0.0)
    assert r.choices[0].text == served["want"]["to be 0"] and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens == len("to be 0")
    parts = [c.choices[0].text for c in client.completions.create(model="tiny", prompt="to be 0", max_tokens=8,
                                                                   temperature=0.0, stream=True)]
    assert "".join(parts) == served["want"]["to be 0"] and len(parts) > 1


def test_chat_plain_and_streaming(served):
    client = _client(served)
    msgs = [{"role": "user", "content": "hi there"}]
    want = served["offline"].generate(plain_chat(msgs), SamplingParams(temperature=0.0, max_tokens=6))[0].text
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0.0)
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == want
    chunks = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0.0,
                                                  stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason == "length"


def test_32_concurrent_streams_each_get_their_own_completion(served):
    async def one(client, prompt):
        text = ""
        async with client.stream("POST", "/v1/completions", json=dict(model="tiny", prompt=prompt, max_tokens=8,
                                                                      temperature=0.0, stream=True)) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    text += json.loads(line[6:])["choices"][0]["text"]
        return text

    async def main():
        async with httpx.AsyncClient(base_url=served["url"], timeout=60) as client:
            return await asyncio.gather(*(one(client, p) for p in PROMPTS[:N_CONCURRENT]))

    got = asyncio.run(main())
    assert got == [served["want"][p] for p in PROMPTS[:N_CONCURRENT]]
    assert served["llm"].stats()["decode_steps"] < N_CONCURRENT * 8     # they shared decode steps


@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", b"{not json", None),
    ("/v1/completions", dict(model="gpt-9", prompt="hi"), "model"),
    ("/v1/completions", dict(model="tiny", prompt="x" * 64), "prompt"),
    ("/v1/completions", dict(model="tiny", prompt="hi", max_tokens=0), "max_tokens"),
    ("/v1/completions", dict(model="tiny", prompt="hi", temperature=-0.5), "temperature"),
    ("/v1/completions", dict(model="tiny", prompt="hi \u2603"), "prompt"),
    ("/v1/chat/completions", dict(model="tiny", messages=[]), "messages"),
    ("/v1/chat/completions", dict(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=-1),
     "max_tokens"),
    ("/v1/completions", dict(model="tiny", prompt="hi", top_p=0.0), "top_p"),
    ("/v1/completions", dict(model="tiny", prompt="hi", max_tokens="many"), "max_tokens"),
    ("/v1/completions", dict(model="tiny"), "prompt"),
    ("/v1/completions", b"[1, 2]", None),
    ("/v1/chat/completions", b"{not json", None),
    ("/v1/chat/completions", dict(model="gpt-9", messages=[{"role": "user", "content": "hi"}]), "model"),
    ("/v1/chat/completions", dict(model="tiny", messages=[{"role": "user", "content": "x" * 64}]), "prompt"),
    ("/v1/chat/completions", dict(model="tiny", messages=[{"role": "user", "content": "hi"}], temperature=-1),
     "temperature"),
], ids=["malformed-json", "unknown-model", "prompt-too-long", "max-tokens-0", "negative-temperature",
        "character-outside-the-vocabulary", "no-messages", "chat-max-tokens", "top-p-0", "max-tokens-not-int",
        "no-prompt", "body-not-an-object", "chat-malformed-json", "chat-unknown-model", "chat-prompt-too-long",
        "chat-negative-temperature"])
def test_bad_requests_get_400_with_an_openai_error(served, path, body, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(served["url"] + path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"] and err["param"] == param
    with pytest.raises(openai.BadRequestError):
        _client(served).completions.create(model="gpt-9", prompt="hi")


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", dict(prompt="leave")),
    ("/v1/chat/completions", dict(messages=[{"role": "user", "content": "leave"}])),
], ids=["completions", "chat"])
def test_a_client_leaving_mid_stream_frees_its_blocks(served, path, body):
    llm = served["llm"]
    with httpx.Client(base_url=served["url"], timeout=60) as client:
        with client.stream("POST", path, json=dict(body, model="tiny", max_tokens=50, temperature=0.0,
                                                   stream=True)) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
    deadline = time.time() + 20
    while llm.has_unfinished_requests() or llm.blocks.num_free != len(llm.blocks.blocks):
        assert time.time() < deadline, f"blocks not freed: {llm.stats()}"
        time.sleep(0.05)
    r = _client(served).completions.create(model="tiny", prompt="to be 0", max_tokens=8, temperature=0.0)
    assert r.choices[0].text == served["want"]["to be 0"]        # and the server keeps serving
