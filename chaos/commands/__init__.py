"""The command line: ``handshake-chaos controller | soak | matrix``."""
