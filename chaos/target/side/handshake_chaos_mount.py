"""The user's ASGI app with the probe route mounted beside it.

``HANDSHAKE_CHAOS_USER_APP`` names the app as ``module:attr``. Websocket requests to the
probe path go to the probe; everything else, lifespan included, goes to the user's app,
so its own startup, shutdown and routes behave as in production. Standard library only.
"""

import importlib
import os

import handshake_chaos_probe


def _load(spec):
    module_name, _, attribute = spec.partition(":")
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


_user_app = _load(os.environ["HANDSHAKE_CHAOS_USER_APP"])


async def app(scope, receive, send):
    if scope["type"] == "websocket" and scope["path"] == handshake_chaos_probe.WS_PATH:
        await handshake_chaos_probe.app(scope, receive, send)
    else:
        await _user_app(scope, receive, send)
