"""handshake-chaos: websocket handshakes held pending while TERM rolls through gunicorn+uvicorn workers."""

from __future__ import annotations

__version__ = "0.1.0"
