"""What the probe's handshakes are doing right now, as the worker itself counts them.

Runs inside the deployment's interpreter (standard library only). Each handshake the probe holds
in a scenario's state is counted from the moment it enters that state until it leaves it; the
counts are written to ``states-<pid>.json`` in ``HANDSHAKE_CHAOS_READY_DIR`` whenever they change
(written whole, then renamed: a reader never sees half a file). The controller reads the file of
each worker just before it signals it: the proof that the state was reached when the signal landed,
whatever the client saw.
"""

import json
import os

_COUNTS = {}
_DIRECTORY = os.environ.get("HANDSHAKE_CHAOS_READY_DIR")


def _write():
    if not _DIRECTORY:
        return
    pid = os.getpid()
    path = os.path.join(_DIRECTORY, "states-%d.json" % pid)
    partial = path + ".partial"
    try:
        with open(partial, "w") as handle:
            json.dump({name: count for name, count in _COUNTS.items() if count}, handle)
        os.replace(partial, path)
    except OSError:
        pass  # the count is evidence, never a reason to fail the app


class held:
    """``with held("deny-stream"): ...`` counts one handshake in that state for the block's duration."""

    def __init__(self, state):
        self.state = state

    def __enter__(self):
        _COUNTS[self.state] = _COUNTS.get(self.state, 0) + 1
        _write()
        return self

    def __exit__(self, *exc_info):
        _COUNTS[self.state] -= 1
        _write()
        return False
