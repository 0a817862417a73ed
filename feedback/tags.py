"""Filtering prompts by tags inside the database. Tags are a JSON list; "has any of these" is
spelled differently by each database, so both spellings live here."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exists, func, literal, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.sql.elements import ColumnElement


def has_any_tag(column, tags: Sequence[str], dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return type_coerce(column, JSONB).has_any(array(list(tags)))
    each = func.json_each(column).table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value.in_(list(tags))))
