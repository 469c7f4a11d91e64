"""Case store: cases, their state history and the dispatch outbox (SQLite default, PostgreSQL by URL)."""

from pipelines.cases.states import ALLOWED, CaseState, InvalidTransition
from pipelines.cases.vocabulary import OutboxStatus, RejectReason
from pipelines.cases.store import (
    Case,
    CaseNotFound,
    CaseQuery,
    CaseStore,
    CaseStoreError,
    CaseStoreUnreachable,
    HistoryEntry,
    NewCase,
    OutboxEntry,
)

__all__ = [
    "ALLOWED", "Case", "CaseNotFound", "CaseQuery", "CaseState", "CaseStore", "CaseStoreError", "CaseStoreUnreachable",
    "HistoryEntry",
    "InvalidTransition", "NewCase", "OutboxEntry", "OutboxStatus", "RejectReason",
]
