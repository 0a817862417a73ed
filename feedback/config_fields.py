"""Config dataclasses describe themselves: every field has a help text (and, where it has a fixed
set of values, its choices) in its metadata, and from that one description the CLI draws its
flags and the pages draw their forms. Nobody re-declares a field or its default.

    @dataclass
    class DPOStageConfig(CommonConfig):
        beta: float = cfg_field(0.1, "Strength of the pull towards the reference policy.")
        loss_type: str = cfg_field("sigmoid", "DPO variant.", choices=("sigmoid", "ipo"))
"""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def cfg_field(default: Any, help: str, *, choices: tuple[Any, ...] | None = None,  # noqa: A002 - as in argparse
              flag: str | None = None) -> Any:
    """A dataclass field with its help text; `choices` where only some values make sense; `flag`
    where the CLI flag has a shorter name than the field (`--versus` for versus_version)."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if flag is not None:
        metadata["flag"] = flag
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class FieldSpec:
    """One config field as a form or a flag needs it."""

    name: str
    kind: type  # bool, int, float, str, list (of `item`) or dict (set as JSON in a config file, not by a flag)
    default: Any
    help: str
    optional: bool = False  # None is a valid value ("off")
    choices: tuple[Any, ...] | None = None
    item: type = str  # the element type of a list field
    flag: str = ""  # the CLI flag


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of `X | None` / `Optional[X]` / `X`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def describe(cls: type) -> list[FieldSpec]:
    """The fields of config dataclass `cls`, with types resolved (also under `from __future__ import annotations`)."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in fields(cls):
        hint, optional = _unwrap(hints[f.name])
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        choices = f.metadata.get("choices")
        item = str
        if typing.get_origin(hint) is typing.Literal:
            choices, hint = choices or typing.get_args(hint), str
        if typing.get_origin(hint) is list:
            item, hint = (typing.get_args(hint) or (str,))[0], list
        if typing.get_origin(hint) is dict:
            hint = dict
        if hint not in (bool, int, float, str, list, dict):
            hint = str
        specs.append(FieldSpec(name=f.name, kind=hint, default=default, help=f.metadata.get("help", ""),
                               optional=optional, choices=tuple(choices) if choices else None, item=item,
                               flag=f.metadata.get("flag") or "--" + f.name.replace("_", "-")))
    return specs


def changed(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Only the values that differ from `cls`'s defaults: what a form sends, so that the config's
    own defaults apply to everything the user left alone."""
    defaults = {spec.name: spec.default for spec in describe(cls)}
    return {name: value for name, value in values.items() if name in defaults and value != defaults[name]}


def _parse_optional(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "") else kind(text)
    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """A `--field-name` flag per field of `cls` (but those in `skip`), with the field's help and
    default in the help text. A list field takes several values, and the flag may repeat. Flags
    left out do not appear in the parsed namespace at all (argparse.SUPPRESS), so
    `flag_values(args, cls)` holds only what was typed."""
    for spec in describe(cls):
        if spec.name in skip or spec.kind is dict:
            continue
        flag = spec.flag
        shown = f"{spec.help} (default: {spec.default!r})"
        common = dict(dest=spec.name, default=argparse.SUPPRESS, help=shown.replace("%", "%%"))
        if spec.kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif spec.kind is list:
            parser.add_argument(flag, action="extend", nargs="+", type=spec.item, metavar=flag.lstrip("-").upper(),
                                **common)
        else:
            kind = _parse_optional(spec.kind) if spec.optional else spec.kind
            parser.add_argument(flag, type=kind, choices=spec.choices, **common)


def flag_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    return {spec.name: getattr(args, spec.name) for spec in describe(cls) if hasattr(args, spec.name)}
