"""An OpenAI-compatible HTTP server over one engine (FastAPI + uvicorn).

    app = build_app(LLM("out/train_gpt/ckpt.safetensors"))
    uvicorn.run(app, port=8000)            # what `tracegrad serve CHECKPOINT --port 8000` does

Routes: POST /v1/completions, POST /v1/chat/completions (the model's chat template, else a plain
`role: content` one), GET /v1/models, GET /health. `"stream": true` answers with server-sent
events (`data: {chunk}` ... `data: [DONE]`). Every HTTP client feeds the same continuous batch:
one engine thread steps the engine whenever it has work and hands each request's new text to
the request's asyncio queue. A bad request (malformed JSON, unknown model, prompt longer than the
context, max_tokens < 1, temperature < 0, ...) gets HTTP 400 with an OpenAI-style error body; a
client that goes away mid-stream has its request aborted and its blocks freed.
"""
from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .engine import LLM, StepOutput
from .sampling_params import SamplingParams


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class EngineThread:
    """Steps the engine on its own thread; requests come in and outputs go out through queues."""

    def __init__(self, llm: LLM):
        self.llm = llm
        self.inbox: queue.Queue = queue.Queue()
        self.outboxes: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self.stopping = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="tracegrad-engine", daemon=True)
        self.thread.start()

    async def submit(self, ids: list[int], params: SamplingParams, prompt: str | None) -> tuple[int, asyncio.Queue]:
        loop, box = asyncio.get_running_loop(), asyncio.Queue()
        reply = loop.create_future()
        self.inbox.put(("add", (ids, params, prompt, loop, box, reply)))
        return await reply, box

    def abort(self, request_id: int) -> None:
        self.inbox.put(("abort", request_id))

    def stop(self) -> None:
        self.stopping = True
        self.inbox.put(("stop", None))
        self.thread.join(timeout=10)

    def _handle(self, kind, payload) -> None:
        if kind == "add":
            ids, params, prompt, loop, box, reply = payload
            try:
                seq = self.llm.add_request(ids, params)
            except Exception as e:   # noqa: BLE001  (the handler validated; pass anything else back)
                loop.call_soon_threadsafe(reply.set_exception, e)
                return
            seq.prompt = prompt
            self.outboxes[seq.seq_id] = (loop, box)
            loop.call_soon_threadsafe(reply.set_result, seq.seq_id)
        elif kind == "abort":
            self.llm.abort(payload)
            self.outboxes.pop(payload, None)

    def _loop(self) -> None:
        while not self.stopping:
            try:
                block = not self.llm.has_unfinished_requests()
                kind, payload = self.inbox.get(timeout=0.1) if block else self.inbox.get_nowait()
                self._handle(kind, payload)
                continue
            except queue.Empty:
                pass
            if not self.llm.has_unfinished_requests():
                continue
            try:
                outs = self.llm.step()
            except BaseException as e:   # noqa: BLE001  (tell every waiting client, then stop)
                self.error = e
                for loop, box in self.outboxes.values():
                    loop.call_soon_threadsafe(box.put_nowait, e)
                raise
            for out in outs:
                dest = self.outboxes.get(out.seq.seq_id)
                if dest is not None:
                    dest[0].call_soon_threadsafe(dest[1].put_nowait, out)
                    if out.finished:
                        self.outboxes.pop(out.seq.seq_id, None)


def _error(message: str, status: int = 400, param: str | None = None, kind: str = "invalid_request_error"):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status)


def _params(body: dict, prompt_len: int, max_len: int, chat: bool) -> SamplingParams:
    default_max = max_len - prompt_len if chat else 16
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) if chat else body.get("max_tokens")
    kw = dict(temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0), top_k=body.get("top_k", 0),
              max_tokens=default_max if max_tokens is None else max_tokens, seed=body.get("seed"),
              stop=body.get("stop") or [], stop_token_ids=body.get("stop_token_ids") or [],
              ignore_eos=bool(body.get("ignore_eos", False)))
    for name in ("temperature", "top_p"):
        if kw[name] is None:
            kw[name] = 1.0
        if not isinstance(kw[name], (int, float)) or isinstance(kw[name], bool):
            raise BadRequest(f"{name} must be a number", name)
    for name in ("max_tokens", "top_k"):
        if not isinstance(kw[name], int) or isinstance(kw[name], bool):
            raise BadRequest(f"{name} must be an integer", name)
    if body.get("n", 1) != 1:
        raise BadRequest("only n=1 is supported", "n")
    try:
        params = SamplingParams(**kw)
    except ValueError as e:
        raise BadRequest(str(e), str(e).split()[0]) from None
    if prompt_len + params.max_tokens > max_len and not chat:
        params.max_tokens = max(1, max_len - prompt_len)     # as vLLM: the context caps the completion
    return params


def build_app(llm: LLM, served_name: str | None = None):
    """The FastAPI app serving `llm` under the model name `served_name` (default: the model's)."""
    from contextlib import asynccontextmanager

    name = served_name or llm.model_name
    engine: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        engine["thread"] = EngineThread(llm)
        yield
        engine["thread"].stop()

    app = FastAPI(title="tracegrad serve", lifespan=lifespan)

    @app.get("/health")
    async def health():
        t = engine.get("thread")
        if t is None or t.error is not None:
            return _error(f"engine stopped: {t.error if t else 'not started'}", 503, kind="server_error")
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": int(time.time()),
                                            "owned_by": "tracegrad", "max_model_len": llm.max_model_len}]}

    async def parse(request: Request, chat: bool):
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        if body.get("model") not in (None, name):
            raise BadRequest(f"the model {body.get('model')!r} does not exist; this server has {name!r}", "model")
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
                raise BadRequest("messages must be a non-empty list of {role, content} objects", "messages")
            if llm.tokenizer is None:
                raise BadRequest("this model has no tokenizer, so it cannot chat", "messages")
            msgs = [dict(m, content=_content(m.get("content"))) for m in msgs]
            prompts = [llm.tokenizer.apply_chat_template(msgs)]
        else:
            prompts = body.get("prompt")
            if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
                prompts = [prompts]
            if not isinstance(prompts, list) or not prompts:
                raise BadRequest("prompt must be a string, a list of strings or a list of token ids", "prompt")
        encoded = []
        for p in prompts:
            try:
                ids = llm.encode(p)
            except (ValueError, TypeError) as e:
                raise BadRequest(str(e), "prompt") from None
            if not ids:
                raise BadRequest("the prompt is empty", "prompt")
            if len(ids) >= llm.max_model_len:
                raise BadRequest(f"the prompt has {len(ids)} tokens; this model's maximum context length is "
                                 f"{llm.max_model_len} tokens, including at least one completion token", "prompt")
            if max(ids) >= llm.model.config.vocab_size or min(ids) < 0:
                raise BadRequest(f"token ids must be in [0, {llm.model.config.vocab_size})", "prompt")
            encoded.append((p if isinstance(p, str) else None, ids))
        params = [_params(body, len(ids), llm.max_model_len, chat) for _, ids in encoded]
        return body, encoded, params

    async def run(request: Request, chat: bool):
        try:
            body, encoded, params = await parse(request, chat)
        except BadRequest as e:
            return _error(str(e), 400, e.param)
        thread = engine["thread"]
        subs = [await thread.submit(ids, p, text) for (text, ids), p in zip(encoded, params)]
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        head = dict(id=rid, object="chat.completion.chunk" if chat else "text_completion",
                    created=int(time.time()), model=name)
        if body.get("stream"):
            return StreamingResponse(_stream(thread, subs, head, chat), media_type="text/event-stream")
        choices, n_out = [], 0
        try:
            for i, (seq_id, box) in enumerate(subs):
                text, reason, n = await _collect(box)
                n_out += n
                choices.append({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                                "finish_reason": reason} if chat else
                               {"index": i, "text": text, "logprobs": None, "finish_reason": reason})
        finally:
            for seq_id, _ in subs[len(choices):]:
                thread.abort(seq_id)
        n_in = sum(len(ids) for _, ids in encoded)
        return dict(head, object="chat.completion" if chat else "text_completion", choices=choices,
                    usage={"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out})

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await run(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await run(request, chat=True)

    return app


def _content(c) -> str:
    if isinstance(c, list):      # [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in c if isinstance(p, dict))
    return "" if c is None else str(c)


async def _next(box: asyncio.Queue) -> StepOutput:
    out = await box.get()
    if isinstance(out, BaseException):
        raise RuntimeError(f"the engine failed: {out}") from out
    return out


async def _collect(box: asyncio.Queue) -> tuple[str, str, int]:
    text, n = "", 0
    while True:
        out = await _next(box)
        text, n = text + out.new_text, n + len(out.new_token_ids)
        if out.finished:
            return text, out.seq.finish_reason, n


async def _stream(thread: EngineThread, subs, head: dict, chat: bool):
    """SSE chunks for each choice in turn; aborts what is unfinished if the client goes away."""
    done: set[int] = set()
    try:
        for i, (seq_id, box) in enumerate(subs):
            if chat:
                yield _sse(dict(head, choices=[{"index": i, "delta": {"role": "assistant", "content": ""},
                                                "logprobs": None, "finish_reason": None}]))
            while True:
                out = await _next(box)
                reason = out.seq.finish_reason if out.finished else None
                choice = ({"index": i, "delta": {"content": out.new_text} if out.new_text else {},
                           "logprobs": None, "finish_reason": reason} if chat else
                          {"index": i, "text": out.new_text, "logprobs": None, "finish_reason": reason})
                if out.new_text or out.finished:
                    yield _sse(dict(head, choices=[choice]))
                if out.finished:
                    done.add(seq_id)
                    break
        yield "data: [DONE]\n\n"
    finally:
        for seq_id, _ in subs:
            if seq_id not in done:
                thread.abort(seq_id)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
