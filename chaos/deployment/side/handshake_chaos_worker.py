"""The gunicorn worker class the launcher runs: uvicorn's worker with a chosen ws implementation.

Runs inside the deployment's interpreter (standard library plus the release's own
uvicorn/gunicorn), put on its PYTHONPATH by the launcher.  uvicorn's worker has no
option for the ws implementation, so it is set through ``CONFIG_KWARGS``.

``HANDSHAKE_CHAOS_WORKER_BASE`` picks where the base class comes from:
``uvicorn_worker`` (the package newer uvicorn releases point to) or
``uvicorn.workers`` (the module older releases ship); ``auto`` prefers the former.
"""

import os
import warnings

_BASE = os.environ.get("HANDSHAKE_CHAOS_WORKER_BASE", "auto")
# The launcher and the controller read a worker's readiness from its heartbeat file. uvicorn
# notifies on the first tick of its main loop (once it serves), then every timeout_notify,
# which defaults to half gunicorn's --timeout (15 s). When the first notify falls within a few
# milliseconds of the file's creation it cannot be told apart from the creation itself (older
# gunicorn only changes the ctime), and readiness would wait 15 s for the second: notify often.
_HEARTBEAT_SECONDS = 0.5
_WS = os.environ.get("HANDSHAKE_CHAOS_WS", "auto")

if _BASE == "uvicorn_worker":
    from uvicorn_worker import UvicornWorker as _UvicornWorker
elif _BASE == "uvicorn.workers":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from uvicorn.workers import UvicornWorker as _UvicornWorker
else:
    try:
        from uvicorn_worker import UvicornWorker as _UvicornWorker
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from uvicorn.workers import UvicornWorker as _UvicornWorker


class ChaosUvicornWorker(_UvicornWorker):
    CONFIG_KWARGS = dict(_UvicornWorker.CONFIG_KWARGS, ws=_WS, timeout_notify=_HEARTBEAT_SECONDS)
