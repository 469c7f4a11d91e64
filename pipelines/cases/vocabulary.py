"""The case side's vocabulary, each word defined once: why a case is rejected and what that means for
retraining, the states of an outbox entry, which dispatch target a case goes to, and which cases are
queued without review.

The API, the review pages, retraining, the pipelines and the dispatcher all read these; none keeps
its own copy (they used to disagree: the API did not accept `permitted`, retraining turned `privacy`
rejections into hard negatives).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.cases.store import Case


@dataclass(frozen=True)
class ReasonInfo:
    zh: str
    en: str
    #: Retraining turns a case rejected for this reason into a hard negative (the picture with an empty
    #: label: "nothing of the kind here"). False where the detector saw a real object and only the case
    #: is not one (a legal stall still looks like a stall; teaching otherwise would blind the detector),
    #: or where the rejection says nothing about the picture (privacy, bookkeeping).
    hard_negative: bool


class RejectReason(StrEnum):
    """Why a reviewer rejects a case (API `reject`, the queue page's keys 1-9 in this order, review exports).
    A case of the wrong type is better corrected (PATCH type) and confirmed than rejected."""

    WRONG_TYPE = "wrong_type"
    LEGAL = "legal"
    DUPLICATE = "duplicate"
    NOT_VISIBLE = "not_visible"
    NOT_A_VIOLATION = "not_a_violation"
    OUTSIDE_HOURS = "outside_hours"
    ALREADY_HANDLED = "already_handled"
    PRIVACY = "privacy"
    OTHER = "other"

    @classmethod
    def _missing_(cls, value: object) -> RejectReason | None:
        """Other names of the same reason: `permitted` (a licensed stall, a permitted vending point) is `legal`."""
        return ALIASES.get(str(value).lower()) if isinstance(value, str) else None

    @property
    def info(self) -> ReasonInfo:
        return REASONS[self]


#: Labels (Chinese for city staff, English) and the hard-negative meaning, in key order.
REASONS: dict[RejectReason, ReasonInfo] = {
    RejectReason.WRONG_TYPE: ReasonInfo("类型错误", "Wrong type", hard_negative=True),
    RejectReason.LEGAL: ReasonInfo("合法/已许可", "Legal / permitted", hard_negative=False),
    RejectReason.DUPLICATE: ReasonInfo("重复案件", "Duplicate", hard_negative=False),
    RejectReason.NOT_VISIBLE: ReasonInfo("看不清", "Not visible", hard_negative=True),
    RejectReason.NOT_A_VIOLATION: ReasonInfo("不构成违规", "Not a violation", hard_negative=True),
    RejectReason.OUTSIDE_HOURS: ReasonInfo("非管控时段", "Outside enforced hours", hard_negative=False),
    RejectReason.ALREADY_HANDLED: ReasonInfo("已处理", "Already handled", hard_negative=False),
    RejectReason.PRIVACY: ReasonInfo("涉及隐私", "Privacy", hard_negative=False),
    RejectReason.OTHER: ReasonInfo("其他", "Other", hard_negative=True),
}
ALIASES = {"permitted": RejectReason.LEGAL}


def is_hard_negative(code: str | None) -> bool:
    """Whether a rejection with this reason code teaches the detector "nothing here". A rejection
    without a code, or with a code this version does not know, counts as one (the reviewer said no)."""
    try:
        return RejectReason(str(code).lower()).info.hard_negative if code else True
    except ValueError:
        return True


#: What city staff call a case's review decision (`review_decision`), as the queue page says it once done: the
#: export's 审核 review column wrote `approved` alone in a file whose every other column reads in Chinese.
REVIEW_NAMES_ZH: dict[str, str] = {"approved": "已确认", "rejected": "已驳回"}


def review_label(decision: str | None) -> str | None:
    """`已确认 approved`: the decision with its Chinese name first; one this version does not name, as it is."""
    return f"{REVIEW_NAMES_ZH[decision]} {decision}" if decision in REVIEW_NAMES_ZH else decision


def reason_label(code: str | None) -> str | None:
    """`不构成违规 not_a_violation`: a rejection's reason code with its Chinese name first; one this version does not
    name, as it is (what a reviewer chose is never dropped from an export)."""
    try:
        return f"{RejectReason(str(code).lower()).info.zh} {code}" if code else None
    except ValueError:
        return code


class OutboxStatus(StrEnum):
    """Where an outbox entry stands; `pending` entries are in flight only while leased."""

    PENDING = "pending"  # to be delivered (now, or at `next_attempt_at`)
    DELIVERED = "delivered"  # the other side has the case; `remote_ref` is their reference
    PARKED = "parked"  # refused by the other side (or given up): waits for a human (`dispatch requeue`)
    WITHDRAWN = "withdrawn"  # its case was withdrawn here (rejected) before it was sent: closed, nothing to fix


class DispatchTargetError(ValueError):
    """No dispatch target can be chosen; `kind` says why: `none` configured, `several` to choose from,
    or an `unknown` name."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def pick_target(configured: Collection[str], name: str | None) -> str:
    """The dispatch target for a case: the one named (it must be configured), else the only one configured."""
    known = ", ".join(sorted(configured))
    if name is not None:
        if name not in configured:
            raise DispatchTargetError(f"unknown dispatch target {name!r} (configured: {known or 'none'})", "unknown")
        return name
    if len(configured) == 1:
        return next(iter(configured))
    if not configured:
        raise DispatchTargetError("no dispatch target is configured (dispatch.targets in the settings file)", "none")
    raise DispatchTargetError(f"several dispatch targets ({known}): choose one", "several")


#: Which dispatch target a case is queued for as soon as its evidence is stored, without review
#: (None: it waits for a reviewer). `Intake` applies it, whatever the pipeline.
AutoQueue = Callable[["Case"], "str | None"]


def queue_everything_for(target: str | None) -> AutoQueue | None:
    """The policy of `triage --dispatch`: every case, one target (None: no auto-queue)."""
    return None if target is None else (lambda case: target)
