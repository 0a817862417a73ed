"""One registry type for everything pluggable: job kinds, judge backends, graders, launchers and
training stages.

An entry is either an object registered directly (`register`, also usable as a decorator), or a
lazy reference "package.module:attribute" that is imported the first time someone asks for it,
so listing the stages or judge backends never loads torch or a provider's SDK. Plugins and test
fakes go through the same `register`; `override` puts an entry in place for a while and restores
whatever was there before (the `registered` fixture in tests/conftest.py uses it).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from feedback.errors import UserError

T = TypeVar("T")
_MISSING = object()


class Registry(Generic[T]):
    """Named entries of one kind, in the order they were added (that is the order pages list)."""

    def __init__(self, what: str, lazy: dict[str, str] | None = None,
                 check_name: Callable[[str], None] | None = None):
        self.what = what  # "grader", "judge backend": used in error messages
        self._check_name = check_name
        self._entries: dict[str, T | str] = {}  # a str is a lazy "module:attribute" reference
        for name, path in (lazy or {}).items():
            self.register_lazy(name, path)

    def register_lazy(self, name: str, path: str) -> None:
        """Add `name` as "package.module:attribute", imported on first `get`."""
        if ":" not in path:
            raise ValueError(f"lazy {self.what} {name!r} must be 'module:attribute', got {path!r}")
        self._add(name, path)

    def register(self, name: str, entry: T | object = _MISSING):
        """`register(name, entry)`, or `@register(name)` above a class or function. A later
        registration under the same name replaces the earlier one."""
        if entry is not _MISSING:
            self._add(name, entry)
            return entry

        def deco(obj: T) -> T:
            self._add(name, obj)
            return obj
        return deco

    def _add(self, name: str, entry: T | str) -> None:
        if self._check_name:
            self._check_name(name)
        self._entries[name] = entry

    def get(self, name: str) -> T:
        entry = self._entries.get(name, _MISSING)
        if entry is _MISSING:
            raise UserError(f"Unknown {self.what} {name!r}; known: {', '.join(self.names()) or 'none'}.")
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = getattr(importlib.import_module(module), attribute)
            self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    @contextmanager
    def override(self, name: str, entry: T) -> Iterator[T]:
        """Register `entry` under `name` until the block ends, then put back what was there
        (or nothing)."""
        previous = self._entries.get(name, _MISSING)
        self.register(name, entry)
        try:
            yield entry
        finally:
            if previous is _MISSING:
                self._entries.pop(name, None)
            else:
                self._entries[name] = previous
