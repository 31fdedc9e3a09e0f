"""The errors every store raises, and the one boundary that maps driver errors to them.

Callers catch these; no driver exception (sqlite3, psycopg) leaves a store.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar


class StoreError(Exception):
    """Base class of every error raised by a store.

    ``retryable``: whether the same call may succeed later unchanged (a host's retry
    after a 503). No driver exception leaves a store: each is one of the subclasses.
    """

    retryable = False


class ConcurrencyConflict(StoreError):
    """The stream's version was not the expected one. Re-read the stream and retry."""

    def __init__(self, stream_id: str, expected: int, actual: int | None = None) -> None:
        super().__init__(f"stream {stream_id!r}: expected version {expected}, found {actual}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class StoreUnavailable(StoreError):
    """The database cannot be reached or refused the work; nothing was stored. Retryable."""

    retryable = True


class StoreFault(StoreError):
    """The database refused the work for a reason a retry will not fix (a bug, a value
    the database cannot hold, a broken invariant). Not retryable; ``code`` is the
    driver's error code (SQLSTATE or SQLite's), never a value of the call."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class StoreMissing(StoreError):
    """The store does not exist (no SQLite file, no PostgreSQL database, no schema);
    nothing was created. Not retryable: the URL or the set-up is what to fix."""


class SchemaMismatch(StoreError):
    """The store's schema is not the one this code runs on: older (run ``ledger
    migrate``) or newer (a later release wrote it). Nothing was changed."""


_T = TypeVar("_T")


Translate = Callable[[Exception], StoreError | None]


def error_boundary(translate: Translate) -> Callable[[type[_T]], type[_T]]:
    """Class decorator: the store's one error boundary.

    Every public method (and ``__init__``, coroutines too) of the decorated class, and
    every iterator a method returns lazily, passes driver exceptions through
    ``translate``; one that it maps (to StoreUnavailable or StoreFault) is raised in
    its place, chained. A StoreError passes unchanged; an exception ``translate`` does
    not know (a bug in our own code) is not disguised as a store error.
    """

    def decorate(cls: type[_T]) -> type[_T]:
        # Inherited methods too (a backend's shared SQL base): the resolved member of
        # every public name, wrapped once on the decorated class itself.
        for name in dir(cls):
            if name.startswith("_") and name != "__init__":
                continue
            member = inspect.getattr_static(cls, name)
            if inspect.isfunction(member):
                setattr(cls, name, _guarded(member, translate))
        return cls

    return decorate


def _rethrow(exc: Exception, translate: Translate) -> NoReturn:
    if not isinstance(exc, StoreError):
        mapped = translate(exc)
        if mapped is not None:
            raise mapped from exc
    raise exc


def _guarded(function: Callable[..., Any], translate: Translate) -> Callable[..., Any]:
    """``function`` with its driver errors translated: a plain function, a generator
    (errors raised while it is iterated) or a coroutine (errors raised while awaited)."""
    if inspect.isgeneratorfunction(function):

        @functools.wraps(function)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from function(*args, **kwargs)
            except Exception as exc:
                _rethrow(exc, translate)

        return generator
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def coroutine(*args: Any, **kwargs: Any) -> Any:
            try:
                return await function(*args, **kwargs)
            except Exception as exc:
                _rethrow(exc, translate)

        return coroutine

    @functools.wraps(function)
    def plain(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            _rethrow(exc, translate)

    return plain
