"""A program behind HTTP: Server-Sent Events of its fields, on Starlette (``pip install 'jupyter_stream[serve]'``).

:func:`asgi_app` makes an ASGI app to mount in FastAPI/Starlette or to run with any ASGI server;
``jupyter-stream serve PROGRAM`` runs it on uvicorn. Routes:

- ``POST /stream`` (JSON inputs) and ``GET /stream?name=value`` (for a browser's ``EventSource``, which can
  only GET): ``text/event-stream`` of :func:`~jupyter_stream.streaming_response` - every field's chunks,
  status messages, the prediction, an ``error`` event if the call fails, then ``[DONE]``;
- ``POST /predict``: the prediction as JSON (``{"prediction": {...}, "model": "..."}``);
- ``GET /``: a page to type the inputs and watch the fields stream (model output shown as text only);
- ``GET /healthz``.

Bad JSON, missing or unknown inputs: HTTP 422 with one clear message, before any LM call. Beyond
``max_concurrency`` running calls: 503 with ``Retry-After``. With ``token``, every route but ``/healthz``
needs ``Authorization: Bearer <token>`` (401 otherwise). A client that hangs up closes the LM request.
The settings in force when the app is made (LM, adapter) are the ones every request runs with.

Example::

    >>> import jupyter_stream as js
    >>> app = js.asgi_app(js.Predict("question -> answer"))
    >>> sorted(route.path for route in app.routes)
    ['/', '/healthz', '/predict', '/stream']
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import _programs as programs
from . import _runs
from . import settings as _settings
from ._exceptions import JupyterStreamError, UsageError
from ._prediction import is_prediction
from .streaming.sse import streaming_response
from .streaming.stream import stream

__all__ = ["asgi_app"]


def asgi_app(program: Any, *, max_concurrency: int = 32, token: str | None = None,
             cors_origins: list[str] | tuple[str, ...] = (), keep_runs: bool = False) -> Starlette:
    """An ASGI app streaming ``program`` (a native or DSPy program) over HTTP; see the module docs.

    ``keep_runs``: keep the requests' runs in ``js.runs`` (off by default: they are other people's inputs).
    """
    if not programs.is_program(program):
        raise UsageError(f"asgi_app needs a program (Module, Predict, or a DSPy module), got {type(program).__name__}")
    if not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise UsageError(f"max_concurrency must be a positive int, got {max_concurrency!r}")
    names = programs.input_names(program)
    snapshot = _settings.current()
    model = _model_name(program, snapshot)
    notice = _frame_status(DEMO_NOTICE) if "demo LM" in model.split(", ") else None
    slots = asyncio.Semaphore(max_concurrency)

    def refused(request: Request) -> Response | None:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"error": "missing or wrong Authorization: Bearer token"}, status_code=401)
        if slots.locked():
            return JSONResponse({"error": f"busy: {max_concurrency} calls are running; retry shortly"},
                                status_code=503, headers={"Retry-After": "1"})
        return None

    def inputs_of(values: Any) -> dict[str, Any] | Response:
        if not isinstance(values, Mapping):
            return _unprocessable(f"the body must be a JSON object of the inputs {names}")
        unknown = sorted(set(values) - set(names))
        missing = [n for n in names if n not in values]
        if unknown or missing:
            parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
            return _unprocessable(f"inputs: {'; '.join(parts)}; this program takes {names}")
        try:
            programs.check_inputs(program, values)
        except UsageError as e:
            return _unprocessable(str(e))
        return dict(values)

    async def body_inputs(request: Request) -> dict[str, Any] | Response:
        try:
            values = json.loads(await request.body() or b"null")
        except ValueError as e:
            return _unprocessable(f"the body is not JSON ({e}); send a JSON object of the inputs {names}")
        return inputs_of(values)

    def events(inputs: dict[str, Any]) -> Any:
        with _settings.use(snapshot), _runs.keeping(keep_runs):
            return stream(program, None, inputs, timeout_profile="streaming")

    async def sse(inputs: dict[str, Any]) -> Response:
        s = events(inputs)

        async def body() -> Any:
            async with slots:
                if notice is not None:  # never silently on the demo LM
                    yield notice
                async for lines in _coalesced(streaming_response(s.__aiter__(), model=model)):
                    yield lines

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def post_stream(request: Request) -> Response:
        no = refused(request)
        if no is not None:
            return no
        inputs = await body_inputs(request)
        return inputs if isinstance(inputs, Response) else await sse(inputs)

    async def get_stream(request: Request) -> Response:
        no = refused(request)
        if no is not None:
            return no
        inputs = inputs_of(dict(request.query_params))
        return inputs if isinstance(inputs, Response) else await sse(inputs)

    async def predict(request: Request) -> Response:
        no = refused(request)
        if no is not None:
            return no
        inputs = await body_inputs(request)
        if isinstance(inputs, Response):
            return inputs
        async with slots:
            try:
                final = None
                async for event in events(inputs):
                    if is_prediction(event):
                        final = event
            except JupyterStreamError as e:
                partial = getattr(e, "partial", None) or {}
                return JSONResponse({"error": {"type": type(e).__name__, "message": str(e), "partial": partial}},
                                    status_code=502)
        return JSONResponse({"prediction": _jsonable(dict(final.items()) if final is not None else {}), "model": model})

    async def page(request: Request) -> Response:
        return HTMLResponse(_page(names, token=token is not None))  # holds no data; its calls need the token

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "inputs": names})

    middleware = [Middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                             allow_headers=["Authorization", "Content-Type"])] if cors_origins else []
    return Starlette(
        routes=[
            Route("/stream", post_stream, methods=["POST"]),
            Route("/stream", get_stream, methods=["GET"]),
            Route("/predict", predict, methods=["POST"]),
            Route("/", page, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        middleware=middleware,
    )


DEMO_NOTICE = "no model configured: the built-in demo LM is answering (its replies are made up)"


_END = object()


async def _coalesced(lines: AsyncIterator[str], *, queued: int = 4096) -> AsyncIterator[str]:
    """``lines`` as they come, each joined with the ones already waiting behind it: one HTTP chunk and one
    socket write per batch instead of one per event (``make bench`` section 10: the server's CPU per delta).
    A line that comes alone goes out at once; at most ``queued`` lines wait for a slow client. Closing this
    generator (a client that hung up) cancels the reader, which closes ``lines`` and its LM request."""
    queue: asyncio.Queue[Any] = asyncio.Queue(queued)

    async def read() -> None:
        try:
            async for line in lines:
                await queue.put(line)
        except Exception as e:  # noqa: BLE001 - handed to the writer, which raises it
            await queue.put(e)
        await queue.put(_END)

    reader = asyncio.ensure_future(read())
    try:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            end = batch[-1] is _END
            if end:
                batch.pop()
            failed = next((x for x in batch if isinstance(x, Exception)), None)
            if failed is not None:
                raise failed
            if batch:
                yield "".join(batch)
            if end:
                break
    finally:
        if not reader.done():
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass


def _model_name(program: Any, snapshot: _settings.Settings) -> str:
    """The model(s) answering for ``program``: its predictors' own LMs, else the configured one, else the demo LM."""
    bridge = programs.dspy_bridge(program)
    if bridge is not None:
        return bridge.model_name()
    default = snapshot.lm.model if snapshot.lm is not None else "demo LM"
    names = {p.lm.model if getattr(p, "lm", None) is not None else default for _, p in programs.named_predictors(program)}
    return ", ".join(sorted(names or {default}))


def _frame_status(message: str) -> str:
    return f"data: {json.dumps({'status_message': {'message': message}})}\n\n"


def _unprocessable(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=422)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def _page(names: list[str], *, token: bool) -> str:
    """The page at ``/``: a field per input (and one for the bearer token when the app needs it), and the
    streamed fields as text (``textContent``, never HTML)."""
    inputs = "".join(
        f'<label>{html.escape(n)}<textarea name="{html.escape(n)}" rows="2"></textarea></label>' for n in names
    )
    if token:
        inputs += '<label>token<input name="__bearer" type="password" autocomplete="off"></label>'
    return _PAGE.replace("{{inputs}}", inputs)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>jupyter_stream</title>
<style>
body{font:15px system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}
label{display:block;margin:.5rem 0}textarea,input{display:block;width:100%;font:inherit}
.pane{border:1px solid #ccc;border-radius:6px;margin:.6rem 0}.pane h3{margin:0;padding:.3rem .6rem;
font:600 13px monospace;background:#f3f3f3}.pane pre{margin:0;padding:.6rem;white-space:pre-wrap;word-break:normal;
overflow-wrap:anywhere}#status{color:#555}#error{color:#a00}
</style></head><body>
<h1>jupyter_stream</h1><form id="form">{{inputs}}<button>Stream</button></form>
<p id="status"></p><p id="error"></p><div id="panes"></div>
<script>
const form = document.getElementById("form"), panes = document.getElementById("panes");
const status = document.getElementById("status"), error = document.getElementById("error");
function pane(key) {
  let p = document.getElementById("pane-" + key);
  if (!p) {
    p = document.createElement("div"); p.className = "pane"; p.id = "pane-" + key;
    const h = document.createElement("h3"); h.textContent = key;
    const t = document.createElement("pre"); t.appendChild(document.createTextNode(""));
    p.append(h, t); panes.appendChild(p);
  }
  return p.querySelector("pre").firstChild;
}
function fail(message) { error.textContent = message; status.textContent = "failed"; }
function handle(event) {
  if (event.stream_response) {
    const r = event.stream_response;
    const who = r.predict_name === "self" ? "" : r.predict_name + (r.call_id > 1 ? "#" + r.call_id : "") + ".";
    pane(who + r.signature_field_name).appendData(r.chunk);
  } else if (event.status_message) { status.textContent = event.status_message.message; }
  else if (event.error) { fail(event.error.type + ": " + event.error.message); }
  else if (event.prediction) { status.textContent = "done" + (event.model ? " \u00b7 " + event.model : ""); }
}
form.addEventListener("submit", async (e) => {
  e.preventDefault(); panes.textContent = ""; error.textContent = ""; status.textContent = "running";
  const inputs = Object.fromEntries(new FormData(form));
  const headers = {"Content-Type": "application/json"};
  if ("__bearer" in inputs) { headers.Authorization = "Bearer " + inputs.__bearer; delete inputs.__bearer; }
  try {
    const response = await fetch("stream", {method: "POST", headers, body: JSON.stringify(inputs)});
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      fail("HTTP " + response.status + (body.error ? ": " + body.error : "")); return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
        const line = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        handle(JSON.parse(data));
      }
    }
    fail("the stream ended before it was done");
  } catch (err) { fail(String(err)); }
});
</script></body></html>
"""
