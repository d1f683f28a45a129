"""The locustfile handshake-chaos ships: ``locust -f`` this file (``handshake-chaos soak`` does).

Importing the plugin registers its options and event hooks; Locust finds ``HandshakeUser`` here.
"""

from chaos.locust_plugin.plugin import HandshakeUser

__all__ = ["HandshakeUser"]
