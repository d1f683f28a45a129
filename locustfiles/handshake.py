"""Locust users that hold websocket handshakes pending while TERM rolls through gunicorn workers.

    locust -f locustfiles/handshake.py --headless -u 200 -r 50 -t 60s

With no ``--host`` it starts its own gunicorn+uvicorn deployment of the probe app on
127.0.0.1 (a free port) and rolls TERM through its workers for the whole run; with
``--host`` it loads that deployment, and rolls its workers too when told its master
(``--target-pid`` / ``--target-pidfile``). Everything lives in the package
(``chaos.locust_plugin``); this file only makes it a locustfile.
"""

from chaos.locust_plugin.plugin import HandshakeUser

__all__ = ["HandshakeUser"]
