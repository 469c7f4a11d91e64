"""Case states and the only transitions allowed between them.

The table is the single source of truth: the store refuses any other move with an error that
names the case, both states and what is allowed, so a bug or a confused webhook cannot silently
push a case backwards (for example from `closed` to `queued`).
"""

from __future__ import annotations

from enum import StrEnum


class CaseState(StrEnum):
    CANDIDATE = "candidate"  # drafted from a violation; waits for evidence upload and review
    QUEUED = "queued"  # approved; an outbox entry will deliver it
    SUBMITTED = "submitted"  # the dispatch system acknowledged it and gave a task number
    ACCEPTED = "accepted"  # the dispatch system opened a case (立案)
    REJECTED = "rejected"  # refused by a reviewer here (before a platform holds it) or voided by the dispatch system (作废)
    CLOSED = "closed"  # finished (结案)
    VERIFYING = "verifying"  # marked handled on the other side; the camera re-checks the scene
    VERIFIED_CLEARED = "verified_cleared"  # the re-check found the scene clear
    STILL_PRESENT = "still_present"  # the re-check still sees the violation


S = CaseState

STATE_NAMES_ZH: dict[CaseState, str] = {
    S.CANDIDATE: "待审核", S.QUEUED: "待派遣", S.SUBMITTED: "已上报", S.ACCEPTED: "已立案", S.REJECTED: "已作废",
    S.CLOSED: "已结案", S.VERIFYING: "核查中", S.VERIFIED_CLEARED: "核查已消除", S.STILL_PRESENT: "核查仍存在",
}
"""What city staff call each state (the review pages show it beside the code)."""

ALLOWED: dict[CaseState, frozenset[CaseState]] = {
    S.CANDIDATE: frozenset({S.QUEUED, S.REJECTED}),
    S.QUEUED: frozenset({S.SUBMITTED, S.REJECTED}),
    S.SUBMITTED: frozenset({S.ACCEPTED, S.REJECTED, S.CLOSED, S.VERIFYING}),
    S.ACCEPTED: frozenset({S.VERIFYING, S.REJECTED, S.CLOSED}),
    S.VERIFYING: frozenset({S.VERIFIED_CLEARED, S.STILL_PRESENT, S.CLOSED}),
    S.VERIFIED_CLEARED: frozenset({S.CLOSED}),
    # Handled again on the other side after a failed re-check -> re-check again.
    S.STILL_PRESENT: frozenset({S.VERIFYING, S.CLOSED}),
    S.REJECTED: frozenset(),
    S.CLOSED: frozenset(),
}


ON_PLATFORM: frozenset[CaseState] = frozenset({S.SUBMITTED, S.ACCEPTED})
"""A dispatch platform holds the case and has not finished with it: it owns the case now, so only its status updates
move it on (status polling asks about these), and a reviewer's reject here is refused (`CaseOnPlatform`): the store
would say 已作废 while the platform still sends a handler."""


EDITABLE: frozenset[CaseState] = frozenset({S.CANDIDATE, S.QUEUED})
"""The states whose type, description and place a reviewer may still change (`CaseStore.revise`): before it leaves
for a platform, which was sent them. Tags, severity and notes are the city's own bookkeeping, changed in any state."""


def review_actions(state: CaseState) -> list[str]:
    """What a reviewer may do to a case in `state`, as the API would allow it (GET /cases/{id}'s `actions`): the queue
    page offers these buttons alone, where it offered 确认 and 驳回 on a case a platform holds, refused 409 on a click.
    confirm: a candidate; reject: a case the table lets be rejected that no platform holds (`ON_PLATFORM`); edit: the
    type, description and place (`EDITABLE`); tag: tags and severity, and note, in any state. Reopening depends on
    more than the state (who rejected it, when): the detail's `reopen` says it."""
    actions = ["confirm"] if state is S.CANDIDATE else []
    if S.REJECTED in ALLOWED[state] and state not in ON_PLATFORM:
        actions.append("reject")
    if state in EDITABLE:
        actions.append("edit")
    return [*actions, "tag", "note"]


REOPEN: tuple[CaseState, CaseState] = (S.REJECTED, S.CANDIDATE)
"""The one move back outside the table: a reviewer undoes a rejection made in review here (a mis-click), which
`CaseStore.reopen` alone makes after checking the rejection was one (not a platform's voiding, nor a triage
withdrawal) and recent. For every other caller `rejected` stays final."""


class InvalidTransition(ValueError):
    """A state change the table above does not allow; said in Chinese first (the review pages show it to staff)."""

    def __init__(self, case_id: str, current: CaseState, wanted: CaseState):
        allowed = ", ".join(sorted(ALLOWED[current])) or "none (final state)"
        allowed_zh = "、".join(STATE_NAMES_ZH[s] for s in sorted(ALLOWED[current])) or "无（已是最终状态）"
        super().__init__(f"案件 {case_id} 现为{STATE_NAMES_ZH[current]}，不能改为{STATE_NAMES_ZH[wanted]}（可改为：{allowed_zh}） "
                         f"case {case_id}: cannot move from {current} to {wanted}; allowed from {current}: {allowed}")
        self.case_id, self.current, self.wanted = case_id, current, wanted


def check_transition(case_id: str, current: CaseState, wanted: CaseState, *, reopening: bool = False) -> None:
    """Nothing when the table allows `current` -> `wanted` (or it is the `REOPEN` move and `reopening` says so)."""
    if reopening and (current, wanted) == REOPEN:
        return
    if wanted not in ALLOWED[current]:
        raise InvalidTransition(case_id, current, wanted)
