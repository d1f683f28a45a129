"""The Locust plugin: options, users, event hooks and distributed-mode wiring.

Nothing is imported here: importing ``plugin`` imports Locust, which monkey-patches the
standard library for gevent, and only a Locust process may do that.
"""
