"""Alembic migrations of the case store (cases, case_history, outbox): `env.py`, `versions/`.

Run by `pipelines.cases.schema.migrate` whenever a `CaseStore` opens; developers add a revision with
`alembic -c pipelines/cases/alembic.ini revision --autogenerate -m "what changes" -x url=sqlite:///dev.db`
(see docs/cases-and-dispatch.md).
"""
