"""The user's ASGI app with the probe route mounted beside it.

``HANDSHAKE_CHAOS_USER_APP`` names the app as ``module:attr``. Websocket requests to the
probe path go to the probe; everything else, lifespan included, goes to the user's app,
so its own startup, shutdown and routes behave as in production. When the user's app
completes its lifespan startup the worker is marked ready (``handshake_chaos_ready``); an
app that does not speak lifespan at all gets the probe's, so every worker says when it is
ready. Standard library only.
"""

import importlib
import os

import handshake_chaos_probe
import handshake_chaos_ready


def _load(spec):
    module_name, _, attribute = spec.partition(":")
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


_user_app = _load(os.environ["HANDSHAKE_CHAOS_USER_APP"])


async def _lifespan(scope, receive, send):
    received = []
    completed = False

    async def watched_receive():
        message = await receive()
        received.append(message["type"])
        return message

    async def marking_send(message):
        nonlocal completed
        if message["type"] == "lifespan.startup.complete":
            completed = True
            handshake_chaos_ready.mark()
        await send(message)

    try:
        await _user_app(scope, watched_receive, marking_send)
    except Exception:
        if received or completed:
            raise  # its own startup or shutdown failed: the server reports that as it would
        # The app does not speak lifespan (it raised on the scope before reading a message): the
        # server would carry on without one; answer it as the probe does, and say when it is ready.
        await handshake_chaos_probe.app(scope, receive, send)


async def app(scope, receive, send):
    if scope["type"] == "websocket" and scope["path"] == handshake_chaos_probe.WS_PATH:
        await handshake_chaos_probe.app(scope, receive, send)
    elif scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
    else:
        await _user_app(scope, receive, send)
