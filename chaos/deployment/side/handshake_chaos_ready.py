"""Readiness from the worker itself: a file named after its pid once its lifespan startup completed.

Runs inside the deployment's interpreter (standard library only). The launcher sets
``HANDSHAKE_CHAOS_READY_DIR``; every server family runs the app's lifespan before it serves, so
the file means "this worker is about to serve" for uvicorn's own workers as for gunicorn's, with
no heartbeat file to read and no timer to wait for.
"""

import os


def mark() -> None:
    directory = os.environ.get("HANDSHAKE_CHAOS_READY_DIR")
    if not directory:
        return
    path = os.path.join(directory, f"ready-{os.getpid()}")
    try:
        with open(path, "w") as handle:
            handle.write("ready\n")
    except OSError:
        pass  # readiness then comes from the worker's heartbeat, where the server has one
