"""The probe app: an ASGI app that keeps websocket handshakes in a chosen state on purpose.

This module runs inside the deployment under test, under whatever interpreter and
release virtualenv gunicorn runs with, so it uses the standard library only and is
put on that interpreter's PYTHONPATH by the launcher (it is not imported as part of
the ``chaos`` package).

Routes:
  ``/ws/probe?scenario=NAME&hold=S&keep=S&frame=N``  holds the handshake in the state the
      scenario names (``chaos.scenarios`` has the records) for ``hold`` seconds, the window
      in which a signal finds it there:
        hold-accept     awaits ``hold`` before websocket.accept (an auth or database lookup);
        before-receive  awaits ``hold`` before taking websocket.connect off its queue;
        deny-close      awaits ``hold``, then closes before accepting (the server answers 403);
        deny-stream     answers with a denial response (websocket.http.response.start, 403) and
                        streams its body in chunks over ``hold`` seconds (more_body=True);
        accept-send     accepts and sends a first frame of ``frame`` bytes at once (the client
                        reads it slowly, so the 101 and the frame are in flight);
        slow-request,   accept at once: the client holds the state (its request, its TLS
        tls-handshake   handshake) on its side.
      Once accepted, it echoes for ``keep`` seconds and closes with 1000.
  ``/healthz``  plain HTTP 200 with the worker pid.
"""

import asyncio
import json
import os
from urllib.parse import parse_qs

import handshake_chaos_ready
from handshake_chaos_states import held

HOLD_DEFAULT_SECONDS = float(os.environ.get("HANDSHAKE_CHAOS_HOLD_DEFAULT", "2.0"))
KEEP_DEFAULT_SECONDS = float(os.environ.get("HANDSHAKE_CHAOS_KEEP_DEFAULT", "1.0"))
# Bounds keep one client from parking a worker forever with a huge query value.
HOLD_MAX_SECONDS = 60.0
KEEP_MAX_SECONDS = 300.0
FRAME_MAX_BYTES = 1 << 20
WS_PATH = "/ws/probe"
DENIAL_CHUNKS = 8
DENIAL_STATUS = 403


def _bounded_param(query_string, name, default, upper):
    values = parse_qs(query_string.decode("latin-1")).get(name)
    if not values:
        return default
    try:
        value = float(values[0])
    except ValueError:
        return default
    if value != value:  # NaN
        return default
    return min(max(value, 0.0), upper)


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            handshake_chaos_ready.mark()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(scope, send):
    if scope["path"] == "/healthz":
        status, body = 200, json.dumps({"status": "ok", "pid": os.getpid()}).encode()
    else:
        status, body = 404, b'{"status": "not found"}'
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _scenario(query_string):
    values = parse_qs(query_string.decode("latin-1")).get("scenario")
    return values[0] if values else "hold-accept"


async def _websocket(scope, receive, send):
    if scope["path"] != WS_PATH:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1008})
        return
    query = scope["query_string"]
    scenario = _scenario(query)
    hold = _bounded_param(query, "hold", HOLD_DEFAULT_SECONDS, HOLD_MAX_SECONDS)
    keep = _bounded_param(query, "keep", KEEP_DEFAULT_SECONDS, KEEP_MAX_SECONDS)
    # Deliberately no try/except anywhere here: a real app does not guard its own accept, denial
    # or send, so whatever the server does to it during shutdown shows.
    # Each state is counted while the handshake is in it (handshake_chaos_states): the controller reads
    # the counts just before it signals the worker.
    if scenario == "before-receive":
        with held(scenario):
            await asyncio.sleep(hold)
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if scenario == "hold-accept":
        with held(scenario):
            await asyncio.sleep(hold)
    elif scenario == "deny-close":
        with held(scenario):
            await asyncio.sleep(hold)
        await send({"type": "websocket.close", "code": 1008})
        return
    elif scenario == "deny-stream":
        await _stream_denial(scope, send, hold)
        return
    await send({"type": "websocket.accept"})
    if scenario == "accept-send":
        size = int(_bounded_param(query, "frame", 65536, FRAME_MAX_BYTES))
        # In flight until the client says the whole frame came (its first message): it reads late on purpose.
        with held(scenario):
            await send({"type": "websocket.send", "bytes": b"f" * size})
            message = await receive()
        if message["type"] == "websocket.disconnect":
            return
    await _echo(receive, send, keep)


async def _stream_denial(scope, send, hold):
    """A 403 whose body arrives in chunks over ``hold`` seconds (the ASGI denial extension)."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        # This server offers no denial response: the client was told it does not apply; say it plainly.
        await send({"type": "websocket.close", "code": 1008})
        return
    chunk = b"denied, and streamed slowly. " * 4
    body_length = len(chunk) * DENIAL_CHUNKS
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(body_length).encode())]
    with held("deny-stream"):
        await send({"type": "websocket.http.response.start", "status": DENIAL_STATUS, "headers": headers})
        for index in range(DENIAL_CHUNKS):
            await asyncio.sleep(hold / DENIAL_CHUNKS)
            more = index < DENIAL_CHUNKS - 1
            await send({"type": "websocket.http.response.body", "body": chunk, "more_body": more})


async def _echo(receive, send, keep):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + keep
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            await send({"type": "websocket.close", "code": 1000})
            return
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except asyncio.TimeoutError:
            continue
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        elif message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        await _http(scope, send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)
