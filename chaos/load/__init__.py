"""The load: one websocket handshake held pending over one socket, and the in-flight ledger."""
