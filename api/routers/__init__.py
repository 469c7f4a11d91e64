"""One router per resource: ops, triage jobs, cases, evidence files, cameras, dispatch feedback,
city workflows (cityops), pages.

Routers depend on `api.context` (the app's context) and `api.auth` (roles), never on `api.app`.
"""
