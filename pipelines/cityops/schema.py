"""The city workflows' tables, defined with the case store's (`pipelines.cases.schema`, Alembic revision
0003): the frontage register, warnings, the call-out list and verification reports live in the case
store's database, so one backup holds a city's cases and the facts about them, and opening a
`CaseStore` creates or upgrades them like every other table."""

from pipelines.cases.schema import callout_numbers, shops, verification_reports, warnings

__all__ = ["callout_numbers", "shops", "verification_reports", "warnings"]
