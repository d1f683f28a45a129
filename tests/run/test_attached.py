"""The deployment a run works on (chaos/run/attached.py): one it did not start, found by its master."""

from __future__ import annotations

from chaos.deployment.environments import ReleaseSpec, build_environment
from chaos.run.attached import find_external, interpreter_of
from chaos.run.options import ChaosOptions


def test_an_external_deployment_in_a_virtualenv_is_labelled_with_its_own_versions(release_cache, start_deployment):
    """The usual case: gunicorn runs from a virtualenv, whose bin/python links to the base interpreter.
    The versions come from the interpreter the master was started with, not from the one /proc resolves."""
    env = build_environment(ReleaseSpec("0.19.0"), release_cache)
    deployment = start_deployment(python=env.python, ws="wsproto")
    master = deployment.master
    assert master is not None
    assert master.process().exe() != env.python  # what /proc/PID/exe says: the base interpreter
    assert interpreter_of(master.process()) == env.python
    attached = find_external(ChaosOptions(target_pid=master.pid), deployment.url)
    assert attached.versions["uvicorn"] == "0.19.0" and attached.versions["gunicorn"] == "20.1.0"
    assert attached.listen_port == deployment.port and attached.master is not None
