"""mod_headers: `Header` (the response's fields) and `RequestHeader` (the request's, before a
guest sees them), parsed once from their lines and applied per request.

Apache's actions: set, append, merge, add, setifempty, unset, edit and edit* (and for Header
echo; note has nothing to act on here). The condition `always` applies a Header to every
response, `onsuccess` (the default) not to the error responses the server makes itself (a
refusal, a redirect, a failed guest), as Apache keeps the two tables. `env=[!]VAR` applies an
action only when the request's environment has (or lacks) VAR; `early` applies a
RequestHeader before the request is routed. Values take %% %t %D and %{VAR}e. Pure: fields in,
fields out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .messages import TCHAR

ACTIONS = ("set", "append", "merge", "add", "setifempty", "unset", "edit", "edit*", "echo", "note")
_REQUEST_ACTIONS = ("set", "append", "merge", "add", "setifempty", "unset", "edit", "edit*")
# What each action takes after the header name: a value, a regex and its replacement, nothing.
_ARITY = {"unset": 0, "echo": 0, "edit": 2, "edit*": 2}

Fields = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class HeaderAction:
    """One Header or RequestHeader line."""

    action: str
    name: str  # as written: a response field goes out in this case; for echo a regex
    value: str = ""  # with its %-specifiers; for edit the regular expression's replacement
    pattern: re.Pattern[str] | None = None  # edit, edit* and echo
    always: bool = False  # Header always: also on the server's own error responses
    early: bool = False
    condition: tuple[str, bool] | None = None  # env=[!]VAR: (VAR, whether it must be set)
    source: str = ""

    @property
    def key(self) -> bytes:
        return self.name.lower().encode("latin-1")

    def applies(self, env: Mapping[str, str]) -> bool:
        if self.condition is None:
            return True
        name, wanted = self.condition
        return (name in env) == wanted


def parse(directive: str, args: list[str], source: str = "") -> HeaderAction:
    """A Header (directive 'Header') or RequestHeader line's arguments; ValueError with the
    usage for what Apache would refuse, or what this server does not do (expr=)."""
    words = list(args)
    always = False
    if directive == "Header" and words and words[0].lower() in ("always", "onsuccess"):
        always = words.pop(0).lower() == "always"
    if not words:
        raise ValueError("expected an action: " + ", ".join(_actions(directive)))
    action = words.pop(0).lower()
    if action not in _actions(directive):
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(_actions(directive))}")
    if not words:
        raise ValueError(f"expected a header name after {action}")
    name = words.pop(0)
    if action != "echo" and (not name or name.encode("latin-1", "replace").translate(None, TCHAR)):
        raise ValueError(f"{name!r} is not a header field name")
    arity = _ARITY.get(action, 1)
    if len(words) < arity:
        raise ValueError(f"{action} takes {'a value' if arity == 1 else 'a regular expression and a replacement'}")
    operands, words = words[:arity], words[arity:]
    if operands and operands[0].startswith("expr="):
        raise ValueError("expr= values are not supported; write the value itself (with %{VAR}e for a variable)")
    early, condition = _condition(words)
    if early and condition is not None:
        raise ValueError("early cannot be combined with env=")
    pattern = None
    value = operands[-1] if operands else ""
    try:
        if action == "echo":
            pattern = re.compile(name, re.IGNORECASE)
        elif arity == 2:
            pattern = re.compile(operands[0])
    except re.error as e:
        raise ValueError(f"invalid regular expression: {e}") from None
    _check_format(value if action not in ("edit", "edit*") else "")
    return HeaderAction(action, name, value, pattern, always, early, condition, source)


def _actions(directive: str) -> tuple[str, ...]:
    return ACTIONS if directive == "Header" else _REQUEST_ACTIONS


def _condition(words: list[str]) -> tuple[bool, tuple[str, bool] | None]:
    """The optional last argument: early, env=[!]VAR (expr= is refused)."""
    if not words:
        return False, None
    if len(words) > 1:
        raise ValueError(f"unexpected {' '.join(words[1:])!r}: one of early, env=[!]VAR may end the line")
    word = words[0]
    if word.lower() == "early":
        return True, None
    if word.lower().startswith("env="):
        name = word[4:]
        negated = name.startswith("!")
        name = name.removeprefix("!")
        if not name:
            raise ValueError("expected env=VAR or env=!VAR")
        return False, (name, not negated)
    if word.lower().startswith("expr="):
        raise ValueError("expr= conditions are not supported; use env=VAR or env=!VAR")
    raise ValueError(f"unexpected {word!r}: expected early or env=[!]VAR")


_SPECIFIER = re.compile(r"%(?:%|t|D|\{([^}]*)\}e)")


def _check_format(value: str) -> None:
    rest = _SPECIFIER.sub("", value)
    if "%" in rest:
        raise ValueError(f"unknown %-specifier in {value!r}; supported: %% %t %D %{{VAR}}e")


@dataclass(frozen=True, slots=True)
class Exchange:
    """What a value's %-specifiers and env= conditions read of the request."""

    start: float  # time.time() when the request arrived
    env: Mapping[str, str]


def expand(value: str, exchange: Exchange) -> str:
    """mod_headers' format: %t the request's start and %D the time so far, in microseconds
    (as 't=...' and 'D=...'), %{VAR}e a variable of the request's environment, %% a '%'."""
    if "%" not in value:
        return value

    def one(match: re.Match[str]) -> str:
        text = match[0]
        if text == "%%":
            return "%"
        if text == "%t":
            return f"t={int(exchange.start * 1_000_000)}"
        if text == "%D":
            return f"D={int((time.time() - exchange.start) * 1_000_000)}"
        return exchange.env.get(match[1], "(null)")

    return _SPECIFIER.sub(one, value)


def apply(
    actions: Sequence[HeaderAction], fields: Fields, exchange: Exchange, request_fields: Fields | None = None
) -> Fields:
    """`fields` after each action in turn (a new list; the input is not changed). For Header
    echo, `request_fields` are the request's."""
    result = list(fields)
    for action in actions:
        if action.applies(exchange.env):
            result = _one(action, result, exchange, request_fields or [])
    return result


def _one(action: HeaderAction, fields: Fields, exchange: Exchange, request_fields: Fields) -> Fields:
    key = action.key
    kind = action.action
    if kind == "note":
        return fields
    if kind == "echo":
        assert action.pattern is not None
        echoed = [(n, v) for n, v in request_fields if action.pattern.search(n.decode("latin-1"))]
        return fields + echoed
    if kind == "unset":
        return [(n, v) for n, v in fields if n.lower() != key]
    if kind in ("edit", "edit*"):
        assert action.pattern is not None
        count = 0 if kind == "edit*" else 1
        replacement = re.sub(r"\$(\d)", r"\\\1", action.value)
        return [
            (n, action.pattern.sub(replacement, v.decode("latin-1"), count=count).encode("latin-1"))
            if n.lower() == key else (n, v)
            for n, v in fields
        ]
    value = expand(action.value, exchange).encode("latin-1", "replace")
    existing = [v for n, v in fields if n.lower() == key]
    name = action.name.encode("latin-1")
    if kind == "add" or (kind == "setifempty" and not existing):
        return [*fields, (name, value)]
    if kind == "setifempty":
        return fields
    if kind in ("append", "merge") and existing:
        joined = b", ".join(existing)
        if kind == "merge" and value in [token.strip() for token in joined.split(b",")]:
            return fields
        value = joined + b", " + value
    # set, and append or merge onto the first of its name: one field of that name, where it was
    others = [(n, v) for n, v in fields if n.lower() != key]
    where = next((i for i, (n, _) in enumerate(fields) if n.lower() == key), None)
    if where is None:
        return [*others, (name, value)]
    position = sum(1 for n, _ in fields[:where] if n.lower() != key)
    return [*others[:position], (name, value), *others[position:]]
