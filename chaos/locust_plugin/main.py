"""Locust's own command line, as handshake-chaos runs it: ``python -m chaos.locust_plugin.main [--sealed] ARGS``.

- ``-h``/``--help``: Locust's help *with* the plugin's options. Locust prints its help before it
  imports any locustfile (``parse_locustfile_option``), so its own ``--help`` never lists options a
  plugin registers; here the plugin is imported first, then Locust's parser prints the help.
- ``--sealed`` (what ``handshake-chaos soak`` runs): Locust reads no configuration but its command
  line. Locust's parser (configargparse) always reads its default files, ``~/.locust.conf``,
  ``./locust.conf`` and ``./pyproject.toml`` ``[tool.locust]``, whatever ``--config`` says (a
  ``--config`` file is read in addition), and every ``LOCUST_*`` variable. Sealed, the default files
  are none and the variables are gone before Locust is imported (``LOCUST_SKIP_MONKEY_PATCH`` is
  read at import).
- Otherwise Locust runs as ``locust`` would, ARGS as given.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

SEALED = "--sealed"
# The parser factories of locust.argument_parser that take the default configuration files.
_FACTORIES = ("get_empty_argument_parser", "get_parser")


def _drop_locust_variables() -> None:
    for name in [name for name in os.environ if name.startswith("LOCUST_")]:
        del os.environ[name]


def _without_default_files(function: Callable[..., Any]) -> None:
    """``function``'s ``default_config_files`` default made empty (its callers never pass it)."""
    positional = [
        parameter
        for parameter in inspect.signature(function).parameters.values()
        if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        and parameter.default is not inspect.Parameter.empty
    ]
    names = [parameter.name for parameter in positional]
    defaults = list(function.__defaults__ or ())
    if "default_config_files" not in names or len(defaults) != len(names):
        raise LookupError(function.__name__)
    defaults[names.index("default_config_files")] = ()
    function.__defaults__ = tuple(defaults)


def seal() -> None:
    """From here on, Locust in this process reads no configuration file and no LOCUST_* variable."""
    _drop_locust_variables()
    from locust import argument_parser

    try:
        for name in _FACTORIES:
            _without_default_files(getattr(argument_parser, name))
    except (AttributeError, LookupError) as exc:
        print(
            f"handshake-chaos: this Locust cannot be kept from reading its configuration files "
            f"({exc} has no default_config_files); install the Locust version handshake-chaos declares",
            file=sys.stderr,
        )
        sys.exit(4)
    argument_parser.DEFAULT_CONFIG_FILES = ()  # type: ignore[assignment]  # for any later reader of the constant


def _wants_help(arguments: Sequence[str]) -> bool:
    head = list(arguments[: arguments.index("--")]) if "--" in arguments else list(arguments)
    return "-h" in head or "--help" in head


def main(arguments: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if arguments is None else arguments)
    if args[:1] == [SEALED]:
        args = args[1:]
        seal()
    sys.argv = ["locust", *args]
    if _wants_help(args):
        from locust.argument_parser import get_parser

        import chaos.locust_plugin.plugin  # noqa: F401 -- registers the plugin's options on Locust's parser

        get_parser().parse_args(args)  # prints the help, the plugin's options included, and exits 0
    from locust.main import main as locust_main

    locust_main()  # type: ignore[no-untyped-call]  # Locust's main is untyped; it exits on its own
    sys.exit(0)


if __name__ == "__main__":
    main()
