"""The probe app: an ASGI app that keeps websocket handshakes pending on purpose.

This module runs inside the deployment under test, under whatever interpreter and
release virtualenv gunicorn runs with, so it uses the standard library only and is
put on that interpreter's PYTHONPATH by the launcher (it is not imported as part of
the ``chaos`` package).

Routes:
  ``/ws/probe?hold=S&keep=S``  waits ``hold`` seconds *before* ``websocket.accept``
      (what real apps do for an auth or database lookup: exactly the window in which
      a TERM finds the handshake pending), accepts, then echoes for ``keep`` seconds
      and closes with 1000.
  ``/healthz``                 plain HTTP 200 with the worker pid.
"""

import asyncio
import json
import os
from urllib.parse import parse_qs

import handshake_chaos_ready

HOLD_DEFAULT_SECONDS = float(os.environ.get("HANDSHAKE_CHAOS_HOLD_DEFAULT", "2.0"))
KEEP_DEFAULT_SECONDS = float(os.environ.get("HANDSHAKE_CHAOS_KEEP_DEFAULT", "1.0"))
# Bounds keep one client from parking a worker forever with a huge query value.
HOLD_MAX_SECONDS = 60.0
KEEP_MAX_SECONDS = 300.0
WS_PATH = "/ws/probe"


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


async def _websocket(scope, receive, send):
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if scope["path"] != WS_PATH:
        await send({"type": "websocket.close", "code": 1008})
        return
    hold = _bounded_param(scope["query_string"], "hold", HOLD_DEFAULT_SECONDS, HOLD_MAX_SECONDS)
    keep = _bounded_param(scope["query_string"], "keep", KEEP_DEFAULT_SECONDS, KEEP_MAX_SECONDS)
    # The pre-accept work. Deliberately no try/except: a real app does not guard
    # its own accept, so whatever the server does to it during shutdown shows.
    await asyncio.sleep(hold)
    await send({"type": "websocket.accept"})
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
