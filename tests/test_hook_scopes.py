"""The console's app-wide hooks are skipped as one for the API (issue 17), and run for every
page in Flask's own order."""

from __future__ import annotations

from flask import Flask

from blueprints import hook_scopes
from blueprints.hook_scopes import is_web_only, web_only


def _app_with_hooks(calls: list[str]) -> Flask:
    app = Flask(__name__)

    def hook(name: str, *, answer=None, kind="before", web=True):
        def before():
            calls.append(name)
            return answer

        def after(response):
            calls.append(name)
            return response

        def teardown(exc=None):
            calls.append(name)

        func = {"before": before, "after": after, "teardown": teardown}[kind]
        func.__name__ = name
        return web_only(func) if web else func

    app.before_request(hook("b1"))
    app.before_request(hook("b2"))
    app.before_request(hook("b-all", web=False))
    app.before_request(hook("b3"))
    app.after_request(hook("a1", kind="after"))
    app.after_request(hook("a-all", kind="after", web=False))
    app.after_request(hook("a2", kind="after"))
    app.after_request(hook("a3", kind="after"))
    app.teardown_request(hook("t1", kind="teardown"))
    app.teardown_request(hook("t2", kind="teardown"))

    @app.get("/page")
    def page():
        calls.append("view")
        return "page"

    @app.get("/api/v1/thing")
    def thing():
        calls.append("view")
        return {"ok": True}

    hook_scopes.init_app(app)
    return app


def test_a_page_runs_the_consoles_hooks_in_flasks_order():
    calls: list[str] = []
    app = _app_with_hooks(calls)
    assert app.test_client().get("/page").status_code == 200
    assert calls == ["b1", "b2", "b-all", "b3", "view", "a3", "a2", "a-all", "a1", "t2", "t1"]


def test_the_api_runs_only_the_hooks_for_everything():
    calls: list[str] = []
    app = _app_with_hooks(calls)
    assert app.test_client().get("/api/v1/thing").status_code == 200
    assert calls == ["b-all", "view", "a-all"]


def test_a_consoles_hook_that_answers_stops_the_request():
    calls: list[str] = []
    app = Flask(__name__)
    app.before_request(web_only(lambda: calls.append("first") or "stopped"))
    app.before_request(web_only(lambda: calls.append("second")))

    @app.get("/page")
    def page():
        calls.append("view")
        return "page"

    hook_scopes.init_app(app)
    answer = app.test_client().get("/page")
    assert answer.get_data(as_text=True) == "stopped" and calls == ["first"]


def test_every_consoles_hook_of_keysmith_is_grouped(app):
    grouped: list[str] = []
    for funcs in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
        for hook in funcs[None]:
            if is_web_only(hook):
                assert hasattr(hook, "hooks"), f"{hook} runs for the API too"
                grouped += [getattr(h, "__name__", None) or repr(h) for h in hook.hooks]
    names = " ".join(grouped)
    for expected in (
        "csrf_protect",
        "_check_request_limit",
        "__inject_headers",
        "_update_remember_cookie",
        "require_two_factor",
        "offer_a_new_organization",
        "refuse_stale_organization",
    ):
        assert expected in names, (expected, names)
    # What the API needs stays outside the groups.
    outside = [getattr(h, "__name__", "") for h in app.before_request_funcs[None]]
    assert "count_api_request" in outside and "_refuse_oversized_body" in outside
