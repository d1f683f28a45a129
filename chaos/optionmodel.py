"""How an option is declared once and everything else is derived from it.

An option is a dataclass field made with ``option(...)``: its type comes from the annotation,
its default from the field, and the rest (flag, help, choices, bounds, when it takes effect,
which entry points have it) from the metadata. From that one declaration come:

- the Locust parser and its web UI form (``add_to_locust``), with env vars;
- the ``soak``/``matrix``/``controller`` flags (``add_to_parser``);
- the conversion of whatever arrives (command line, env var, the web UI's form, which posts
  every field as a string and blanks as ``""``) into typed values, with one clear line on
  bad input (``build``);
- the forwarding of a run's options to a Locust process (``to_args``).

Values travel as text until ``build``: one conversion path for every door.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import configargparse

from chaos.errors import UsageError
from chaos.timespan import parse_timespan

EntryPoint = Literal["locust", "soak", "matrix", "controller", "bisect", "health"]
# When a new value takes effect: at the next test start (editable in Locust's web UI), or only
# when the process starts (the deployment is already running by then).
Scope = Literal["test", "process"]
RUN: frozenset[EntryPoint] = frozenset({"locust", "soak", "matrix"})
ENV_PREFIX = "HANDSHAKE_CHAOS_"
# Where an option is listed in --help (and the generated reference), in this order, with what each holds.
Group = Literal["load", "signals", "deployment", "detection", "gate", "output"]
GROUPS: Mapping[str, str] = {
    "load": "what the Locust users do: how many, how long, which handshake states",
    "signals": "what the controller sends to the deployment, and when",
    "deployment": "what runs under test: the release, its environment, the server and your app",
    "detection": "what counts as a handshake-time shutdown error, and where the server logs it",
    "gate": "the verdict and its exit code",
    "output": "labels, metrics, reports and CI files",
}

T = TypeVar("T")


@dataclass(frozen=True)
class OptionMeta:
    flag: str
    help: str
    scope: Scope = "test"
    entry_points: frozenset[EntryPoint] = RUN
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # strictly above zero
    duration: bool = False  # text like 45s, 10m, read with Locust's own parser
    defaults: Mapping[str, Any] = field(default_factory=dict)  # per entry point, where one differs
    what: str = "value"  # what a value is, for the one-line error ("unknown implementation ...")
    choices_named: str = "choose from"
    required: bool = False
    repeatable: bool = False  # a list given one flag at a time (--with a --with b)
    group: Group | Literal[""] = ""  # its section of --help (GROUPS); a test keeps every option in one
    # Never shown back (summaries, the web UI) nor forwarded on a command line (other users see those).
    secret: bool = False


def option(default: Any, flag: str, help: str, **meta: Any) -> Any:
    """A dataclass field that is also a command-line option (see the module doc)."""
    factory = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return field(**factory, metadata={"option": OptionMeta(flag, help, **meta)})


@dataclass(frozen=True)
class Declared:
    """One option, resolved from its dataclass field."""

    name: str
    meta: OptionMeta
    default: Any
    base: type
    optional: bool
    many: bool

    @property
    def env_var(self) -> str:
        """Named after the flag (``--with``: ``HANDSHAKE_CHAOS_WITH``; ``--chaos-events``: ``..._EVENTS``)."""
        flag = self.meta.flag.lstrip("-").removeprefix("chaos-")
        return ENV_PREFIX + flag.replace("-", "_").upper()

    @property
    def env_aliases(self) -> tuple[str, ...]:
        """Earlier names still read: the one after the field's name where it differs from the flag's."""
        legacy = ENV_PREFIX + self.name.upper()
        return () if legacy == self.env_var else (legacy,)

    @property
    def env_vars(self) -> tuple[str, ...]:
        return (self.env_var, *self.env_aliases)

    def alias_value(self, environ: Mapping[str, str]) -> str | None:
        """The value an alias gives, when the flag-named variable is not set."""
        if self.env_var in environ:
            return None
        return next((environ[name] for name in self.env_aliases if name in environ), None)

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.meta.flag, *self.meta.aliases)

    def default_for(self, entry: str) -> Any:
        return self.meta.defaults.get(entry, self.default)

    def text(self, value: Any) -> str:
        """A value as it is typed on a command line (and shown in the web UI)."""
        if value is None:
            return ""
        if isinstance(value, list | tuple):
            return ",".join(self.text(one) for one in value)  # NAME,NAME: one field, one env var
        if self.meta.duration:
            return f"{value:g}s"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    def convert(self, raw: Any, entry: str) -> Any:
        """A typed value from text (or an already typed value); blank means the default."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None if self.optional else self.default_for(entry)
        if self.many:
            # NAME,NAME or NAME NAME, from one flag, several, an env var or a form field alike.
            pieces = raw if isinstance(raw, list | tuple) else [raw]
            items = [item for piece in pieces for item in str(piece).replace(",", " ").split()]
            return [self._one(item) for item in items] if items else list(self.default_for(entry))
        return self._one(raw)

    def _one(self, raw: Any) -> Any:
        meta = self.meta
        text = raw.strip() if isinstance(raw, str) else raw
        value: Any
        if self.base is bool:
            if isinstance(text, bool):
                return text
            lowered = str(text).lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise UsageError(f"{meta.flag}: expected true or false, got {raw!r}")
            return lowered in ("true", "1", "yes", "on")
        if meta.duration:
            value = float(parse_timespan(str(text), meta.flag))
        elif self.base is int:
            try:
                value = int(text)
            except (TypeError, ValueError):
                raise UsageError(f"{meta.flag}: expected a whole number, got {raw!r}") from None
        elif self.base is float:
            try:
                value = float(text)
            except (TypeError, ValueError):
                raise UsageError(f"{meta.flag}: expected a number, got {raw!r}") from None
            if not math.isfinite(value):
                raise UsageError(f"{meta.flag}: expected a finite number, got {raw!r}")
        else:
            value = str(text)
        self._check_one(value)
        return value

    def check(self, value: Any) -> None:
        """Raises UsageError unless ``value`` is one this option accepts (its choices, its bounds)."""
        if value is None and self.optional:
            return
        for item in value if self.many else [value]:
            self._check_one(item)

    def _check_one(self, value: Any) -> None:
        meta = self.meta
        if meta.choices is not None and value not in meta.choices:
            raise UsageError(
                f"{meta.flag}: unknown {meta.what} {value!r} ({meta.choices_named} {', '.join(meta.choices)})"
            )
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        if meta.positive and value <= 0:
            raise UsageError(f"{meta.flag}: must be above 0, got {value:g}")
        if meta.minimum is not None and value < meta.minimum:
            raise UsageError(f"{meta.flag}: must be at least {meta.minimum:g}, got {value:g}")
        if meta.maximum is not None and value > meta.maximum:
            raise UsageError(f"{meta.flag}: must be at most {meta.maximum:g}, got {value:g}")


def _unwrap(hint: Any) -> tuple[type, bool, bool]:
    optional = False
    if get_origin(hint) in (Union, types.UnionType):
        members = [arg for arg in get_args(hint) if arg is not type(None)]
        optional = len(members) < len(get_args(hint))
        hint = members[0]
    many = get_origin(hint) in (list, tuple)
    if many:
        hint = get_args(hint)[0]
    if get_origin(hint) is Literal:
        hint = type(get_args(hint)[0])
    return hint, optional, many


@cache
def declared(cls: type) -> tuple[Declared, ...]:
    """Every option a dataclass declares, in declaration order."""
    hints = get_type_hints(cls)
    found = []
    for item in dataclasses.fields(cls):
        meta = item.metadata.get("option")
        if meta is None:
            continue
        base, optional, many = _unwrap(hints[item.name])
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        found.append(Declared(item.name, meta, default, base, optional, many))
    return tuple(found)


def declared_on(cls: type, entry: str) -> list[Declared]:
    return [d for d in declared(cls) if entry in d.meta.entry_points]


def build(cls: Callable[..., T], values: Mapping[str, Any], entry: str) -> T:
    """An options object from raw values (``vars(namespace)``, a form): converted, defaults for blanks."""
    kwargs = {}
    for item in declared_on(cls, entry):  # type: ignore[arg-type]
        raw = values.get(item.name)
        if item.meta.required and (raw is None or raw == "" or raw == []):
            raise UsageError(f"{item.meta.flag} is required")
        kwargs[item.name] = item.convert(raw, entry)
    return cls(**kwargs)


def check_all(options: object) -> None:
    """Every option of ``options`` within its declaration (for objects built in code, not parsed)."""
    cls: type = type(options)
    for item in declared(cls):
        item.check(getattr(options, item.name))


def changed_args(options: object, entry: str = "locust") -> list[str]:
    """The command-line arguments that give ``options`` to an ``entry`` process (non-defaults only)."""
    args: list[str] = []
    for item in declared_on(type(options), entry):
        value = getattr(options, item.name)
        if value == item.default_for(entry) or item.meta.secret:
            continue
        if item.base is bool:
            args += [item.meta.flag] if value else []
        elif item.meta.repeatable:
            for one in value:
                args += [item.meta.flag, item.text(one)]
        elif item.many:
            args += [item.meta.flag, item.text(value)]  # NAME,NAME: one value, whichever parser reads it
        else:
            args += [item.meta.flag, item.text(value)]
    return args


def _shown_default(item: Declared, entry: str) -> str:
    """The default as help and the docs show it ("" when there is none)."""
    default = item.default_for(entry)
    if item.base is bool:
        return "on" if default else "off"
    return " ".join(default) if item.many else item.text(default)


def _help(item: Declared, entry: str) -> str:
    """The option's help with its default, once: a help that says its own default in words keeps it."""
    if "(default:" in item.meta.help:
        return item.meta.help
    return f"{item.meta.help} (default: {_shown_default(item, entry) or 'none'})"


_TRUE = ("true", "1", "yes", "on")


def _group(parser: argparse.ArgumentParser, name: str, title: str) -> Any:
    """The parser's argument group for ``name`` (a ``GROUPS`` entry), made when first used and kept in
    ``GROUPS`` order after the parser's own groups, whichever options class adds to it first (argparse
    prints a group's title and description even when it is empty, so none is made ahead)."""
    groups: dict[str, Any] = parser.__dict__.setdefault("_handshake_chaos_groups", {})
    if name not in groups:
        groups[name] = parser.add_argument_group(title.format(name or "other"), GROUPS.get(name))
        order = [*GROUPS, ""]
        ours = [groups[key] for key in sorted(groups, key=order.index)]
        parser._action_groups = [group for group in parser._action_groups if group not in ours] + ours
    return groups[name]


def add_to_parser(parser: argparse.ArgumentParser, cls: type, entry: str) -> None:
    """The options ``cls`` declares for ``entry``, on a handshake-chaos command's parser, each in its group.

    Values stay text here (``build`` converts them), so every bad value is one clear line. An option's
    older env var name (``env_aliases``) is still read, below its flag-named one.
    """
    for item in declared_on(cls, entry):
        kwargs: dict[str, Any] = {"dest": item.name, "help": _help(item, entry)}
        if isinstance(parser, configargparse.ArgumentParser):
            kwargs["env_var"] = item.env_var
        alias = item.alias_value(os.environ)
        if item.base is bool:
            # On by default here (--until-verdict on matrix): --no-... turns it off.
            action = argparse.BooleanOptionalAction if item.default_for(entry) else "store_true"
            default = item.default_for(entry) if alias is None else alias.strip().lower() in _TRUE
            kwargs.update(action=action, default=default)
        else:
            kwargs["default"] = alias
            if item.meta.repeatable:
                kwargs["action"] = "append"
                kwargs["default"] = None if alias is None else [alias]
            elif item.many:
                kwargs["nargs"] = "*" if not item.meta.required else "+"
            if item.meta.choices is not None:
                kwargs["metavar"] = "{" + ",".join(item.meta.choices) + "}"
            else:
                kwargs["metavar"] = item.meta.flag.lstrip("-").replace("-", "_").upper()  # --with WITH
        _group(parser, item.meta.group, "{} options").add_argument(*item.flags, **kwargs)


def add_command(subparsers: Any, name: str, help: str, classes: Iterable[tuple[type, str]]) -> Any:
    """A subcommand whose options are those ``classes`` declare for each one's entry point."""
    parser = subparsers.add_parser(name, help=help)
    for cls, entry in classes:
        add_to_parser(parser, cls, entry)
    return parser


def add_to_locust(parser: Any, cls: type) -> None:
    """The options ``cls`` declares for Locust, on Locust's parser (``init_command_line_parser``).

    Test-scope options appear in the web UI's start form with their defaults as text;
    process-scope ones are not offered there (editing them could not take effect).
    """
    for item in declared_on(cls, "locust"):
        default = item.default_for("locust")
        # Locust's help leaves env vars out (add_env_var_help=False): ours say theirs.
        help_text = f"{_help(item, 'locust')} [env var: {item.env_var}]"
        kwargs: dict[str, Any] = {"dest": item.name, "env_var": item.env_var, "help": help_text}
        alias = item.alias_value(os.environ)
        if alias is not None:  # an older env var name, still read: the flag-named one wins when both are set
            default = alias.strip().lower() in _TRUE if item.base is bool else alias
        if item.base is bool:
            kwargs.update(action="store_true", default=default)
        elif item.many:
            kwargs["default"] = item.text(default)  # a text field: NAME,NAME (no select for a list)
        else:
            kwargs["default"] = item.text(default)
            if item.meta.choices is not None and item.meta.scope == "test":
                kwargs["choices"] = item.meta.choices  # a select in the web UI
        group = _group(parser, item.meta.group, "handshake-chaos {} options (docs/options.md)")
        action = group.add_argument(*item.flags, **kwargs)
        # A group's add_argument is argparse's own, not Locust's: mark the action for the web UI here.
        action.include_in_web_ui = item.meta.scope == "test"
        action.is_secret = item.meta.secret
        action.is_required = action.is_multiple = False


def secret_names(cls: type) -> frozenset[str]:
    return frozenset(item.name for item in declared(cls) if item.meta.secret)


def test_scope_names(cls: type) -> frozenset[str]:
    return frozenset(item.name for item in declared(cls) if item.meta.scope == "test")


def with_test_scope(current: T, values: Mapping[str, Any], entry: str = "locust") -> T:
    """``current`` with its test-scope options re-read from ``values`` (the web UI's form)."""
    fresh = build(type(current), values, entry)
    names = test_scope_names(type(current))
    return dataclasses.replace(current, **{name: getattr(fresh, name) for name in names})  # type: ignore[type-var]


def reference_table(cls: type, entry: str) -> list[tuple[str, str, str, str, str]]:
    """(group, flags, default, env var, help) of each option, for the generated docs."""
    rows: list[tuple[str, str, str, str, str]] = []
    for item in declared_on(cls, entry):
        scope = "" if entry != "locust" or item.meta.scope == "test" else " (at start only)"
        env = item.env_var + "".join(f" (or {alias})" for alias in item.env_aliases)
        flags = ", ".join(item.flags)
        rows.append((item.meta.group, flags, _shown_default(item, entry) or "-", env, item.meta.help + scope))
    return rows
