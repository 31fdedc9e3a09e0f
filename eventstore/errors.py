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


_T = TypeVar("_T")


def error_boundary(
    translate: Callable[[Exception], StoreError | None],
) -> Callable[[type[_T]], type[_T]]:
    """Class decorator: the store's one error boundary.

    Every public method (and ``__init__``, coroutines too) of the decorated class, and every iterator
    a method returns lazily, passes driver exceptions through ``translate``; one that
    it maps (to StoreUnavailable or StoreFault) is raised in its place, chained. A
    StoreError passes unchanged; an exception ``translate`` does not know (a bug in
    our own code) is not disguised as a store error.
    """

    def rethrow(exc: Exception) -> NoReturn:
        if not isinstance(exc, StoreError):
            mapped = translate(exc)
            if mapped is not None:
                raise mapped from exc
        raise exc

    def wrap_function(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception as exc:
                rethrow(exc)

        return guarded

    def wrap_generator(function: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from function(*args, **kwargs)
            except Exception as exc:
                rethrow(exc)

        return guarded

    def wrap_coroutine(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return await function(*args, **kwargs)
            except Exception as exc:
                rethrow(exc)

        return guarded

    def decorate(cls: type[_T]) -> type[_T]:
        # Inherited methods too (a backend's shared SQL base): the resolved member of
        # every public name, wrapped once on the decorated class itself.
        for name in dir(cls):
            if name.startswith("_") and name != "__init__":
                continue
            member = inspect.getattr_static(cls, name)
            if not inspect.isfunction(member):
                continue
            wrapper = wrap_function
            if inspect.isgeneratorfunction(member):
                wrapper = wrap_generator
            elif inspect.iscoroutinefunction(member):
                wrapper = wrap_coroutine
            setattr(cls, name, wrapper(member))
        return cls

    return decorate
