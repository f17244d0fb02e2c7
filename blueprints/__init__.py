"""One package per area of the site; each exposes `bp`."""

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from blueprints import web
    from blueprints.account import bp as account_bp
    from blueprints.api import bp as api_bp
    from blueprints.audit import bp as audit_bp
    from blueprints.auth import bp as auth_bp
    from blueprints.invites import bp as invites_bp
    from blueprints.main import bp as main_bp
    from blueprints.settings import bp as settings_bp
    from blueprints.tokens import bp as tokens_bp
    from blueprints.webhooks import bp as webhooks_bp

    web.init_app(app)
    for bp in (
        main_bp,
        auth_bp,
        account_bp,
        tokens_bp,
        webhooks_bp,
        audit_bp,
        settings_bp,
        invites_bp,
    ):
        app.register_blueprint(bp)
    app.register_blueprint(api_bp, url_prefix="/api/v1")
