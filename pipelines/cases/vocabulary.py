"""The case side's vocabulary, each word defined once: why a case is rejected and what that means for
retraining, the states of an outbox entry, which dispatch target a case goes to, and which cases are
queued without review.

The API, the review pages, retraining, the pipelines and the dispatcher all read these; none keeps
its own copy (they used to disagree: the API did not accept `permitted`, retraining turned `privacy`
rejections into hard negatives).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from pipelines.cases.states import STATE_NAMES_ZH, CaseState

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


#: What city staff call a case's source (`source_kind`): the pages' 来源 Source and the export's 来源名称 source name.
SOURCE_NAMES_ZH: dict[str, str] = {"camera": "摄像头", "photo_batch": "照片"}


#: What the code writes in a case's history (the queue page's 原因 Reason column), in Chinese: (a regular expression
#: matching the English reason from its start, its Chinese), the first that matches wins. The English stays stored
#: (scripts, tests, `cases show` and earlier rows read it) and is shown after the Chinese, with the names it holds (the
#: platform, its reference, why a delivery was parked). A reason none matches, a reviewer's or a platform's own words,
#: is shown as it is; one the code writes in Chinese first (`withdrawn_but_held`, a triage withdrawal) needs none. The
#: pages get these through GET /meta (`history_reasons`), so each is written as Python's `re` and JavaScript's RegExp
#: read it alike (^, $, .+, \( only).
HISTORY_REASONS_ZH: tuple[tuple[str, str], ...] = (
    (r"^case drafted$", "生成案件"),
    (r"^rejected in review$", "审核驳回"),
    *((rf"^{code}$", info.zh) for code, info in REASONS.items()),  # a rejection without a note: its reason's code
    (r"^queued for ", "排队待派遣"),
    (r"^delivered as ", "已送达平台"),
    (r"^found on .+ \(an earlier attempt had reached it\)$", "平台已有此案件（此前一次发送已送达）"),
    (r"^not sent to .+: the case was withdrawn before it was sent$", "未发送：发送前案件已撤回"),
    (r"^not sent to .+: the case is queued for .+ now", "未发送：案件已改派其他平台"),
    (r"^dispatch to .+ parked: ", "派遣暂停，待人工处理"),
    (r"^parked delivery to .+ requeued$", "暂停的派遣已重新排队"),
    (r"^handled on the dispatch side; re-check pending$", "平台已处置，待复核"),
    (r"^handled on the dispatch side$", "平台已处置"),
    (r"^handled: disposal photo received, check pending$", "已收到处置照片，待复核"),
    *((rf"^re-check: {s}$", f"复核：{STATE_NAMES_ZH[s]}") for s in (CaseState.VERIFIED_CLEARED, CaseState.STILL_PRESENT)),
)


def history_reason_zh(reason: str | None) -> str | None:
    """The Chinese of a history row's reason (None where `HISTORY_REASONS_ZH` has none): what the queue page shows
    before it (queue.js through the meta), here for the checks that every reason written has one."""
    return next((zh for pattern, zh in HISTORY_REASONS_ZH if reason and re.search(pattern, reason)), None)


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
