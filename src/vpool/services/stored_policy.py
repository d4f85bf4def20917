"""Pool-wide policies (migration, DRS) kept as `prefix.field` rows of the settings table: a
dataclass of plain fields with defaults, each row overriding one, checked as a whole on change."""

from dataclasses import fields, replace
from typing import TypeVar

from sqlalchemy import select

from vpool.model.errors import Invalid
from vpool.store.tables import Setting

P = TypeVar("P")


def load(s, cls: type[P], prefix: str) -> P:
    stored = {k.removeprefix(prefix): v for k, v in s.execute(
        select(Setting.key, Setting.value).where(Setting.key.startswith(prefix)))}
    return cls(**{f.name: _parse(_kind(f.type), stored[f.name]) for f in fields(cls) if f.name in stored})


def save(s, cls: type[P], prefix: str, changes: dict, noun: str) -> P:
    """The policy with `changes` (field -> value, as text or JSON scalars), checked and stored;
    an unknown field or a bad value is refused with nothing stored."""
    known = {f.name: _kind(f.type) for f in fields(cls)}
    unknown = set(changes) - set(known)
    if unknown:
        word = "setting" if len(unknown) == 1 else "settings"
        raise Invalid(f"unknown {noun} {word} {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    try:
        policy = replace(load(s, cls, prefix), **{k: _parse(known[k], str(v)) for k, v in changes.items()}).check()
    except ValueError as e:
        raise Invalid(f"bad {noun} setting: {e}") from None
    for key in changes:
        row = s.get(Setting, f"{prefix}{key}") or Setting(key=f"{prefix}{key}")
        row.value = str(getattr(policy, key))
        s.add(row)
    s.commit()
    return policy


def _kind(annotation) -> str:
    """A field's type by name, whether its module postpones annotations (a string) or not."""
    return annotation if isinstance(annotation, str) else annotation.__name__


def _parse(kind: str, text: str):
    if kind == "bool":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{text!r} is not true or false")
        return text.lower() in ("true", "1")
    return {"int": int, "float": float}.get(kind, str)(text)
