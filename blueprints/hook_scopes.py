"""The console's hooks, skipped as one for the JSON API, /healthz and static files (issue 17:
nothing on the API path that the API does not use).

Flask runs every app-wide before_request, after_request and teardown_request hook on every
request. Those only the console needs (CSRF, Flask-Login's remember cookie, Flask-Limiter's
per-route limits, the two-factor and organization checks: `web_only` below, and the hooks of
those extensions) are gathered, where they stand in each list, into one hook that runs them
in Flask's own order, or, for a path under SESSIONLESS_PATHS, not at all. The order of every
hook against the others is unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask, request

from blueprints.api.session import SESSIONLESS_PATHS

WEB_ONLY = "_keysmith_web_only"
# The extensions whose app-wide hooks serve the console only.
WEB_EXTENSIONS = ("flask_wtf.", "flask_limiter.", "flask_login.")


def web_only(func: Callable) -> Callable:
    """Mark an app-wide hook as the console's: never run for the API."""
    setattr(func, WEB_ONLY, True)
    return func


def is_web_only(hook: Any) -> bool:
    if getattr(hook, WEB_ONLY, False):
        return True
    while isinstance(hook, functools.partial):
        hook = hook.func
    module = getattr(getattr(hook, "__func__", hook), "__module__", None) or ""
    return module.startswith(WEB_EXTENSIONS)


def _sessionless() -> bool:
    return request.path.startswith(SESSIONLESS_PATHS)


def _before(hooks: list[Callable]) -> Callable:
    def console_before_request() -> Any:
        if _sessionless():
            return None
        for hook in hooks:
            answer = hook()
            if answer is not None:
                return answer
        return None

    return console_before_request


def _after(hooks: list[Callable]) -> Callable:
    def console_after_request(response: Any) -> Any:
        if _sessionless():
            return response
        for hook in reversed(hooks):  # as Flask runs after_request hooks
            response = hook(response)
        return response

    return console_after_request


def _teardown(hooks: list[Callable]) -> Callable:
    def console_teardown_request(exc: BaseException | None = None) -> None:
        if _sessionless():
            return
        for hook in reversed(hooks):  # as Flask runs teardown_request hooks
            hook(exc)

    return console_teardown_request


def _grouped(hooks: list[Callable], group: Callable[[list[Callable]], Callable]) -> list:
    result: list[Callable] = []
    run: list[Callable] = []
    for hook in hooks:
        if is_web_only(hook):
            run.append(hook)
            continue
        if run:
            result.append(_group(group, run))
            run = []
        result.append(hook)
    if run:
        result.append(_group(group, run))
    return result


def _group(group: Callable[[list[Callable]], Callable], hooks: list[Callable]) -> Callable:
    grouped = web_only(group(hooks))
    grouped.hooks = tuple(hooks)  # type: ignore[attr-defined]  # for tests and debugging
    return grouped


def init_app(app: Flask) -> None:
    """Call last, once every app-wide hook is registered (the app's sync hooks only: a
    group calls its hooks directly)."""
    for funcs, group in (
        (app.before_request_funcs, _before),
        (app.after_request_funcs, _after),
        (app.teardown_request_funcs, _teardown),
    ):
        if None in funcs:
            funcs[None] = _grouped(funcs[None], group)
