"""The escalation rules (pipeline/escalation.py) as tables, on a fixed clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from vetgateway.pipeline.escalation import (
    AlertSnapshot,
    Contact,
    RotaMember,
    fallback_contact,
    next_actions,
)
from vetgateway.store.models import AlertState, ContactKind, OnCallLevel, PageChannel

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(minutes=5)

PRIMARY = uuid.UUID(int=1)
BACKUP = uuid.UUID(int=2)
LEAD = uuid.UUID(int=3)
LEAD2 = uuid.UUID(int=4)


def member(vet: uuid.UUID, *contacts: tuple[ContactKind, str, int]) -> RotaMember:
    return RotaMember(vet, tuple(Contact(k, a, p) for k, a, p in contacts))


FULL = {
    OnCallLevel.PRIMARY: [member(PRIMARY, (ContactKind.SMS, "+1", 0))],
    OnCallLevel.BACKUP: [member(BACKUP, (ContactKind.EMAIL, "b@x", 0))],
    OnCallLevel.LEAD: [
        member(LEAD, (ContactKind.WEBHOOK, "https://l", 0)),
        member(LEAD2, (ContactKind.EMAIL, "l2@x", 0)),
    ],
}
NO_BACKUP = {**FULL, OnCallLevel.BACKUP: [member(BACKUP, (ContactKind.PHONE, "+9", 0))]}
PRIMARY_ONLY = {OnCallLevel.PRIMARY: FULL[OnCallLevel.PRIMARY]}

OPEN, ACKED = AlertState.OPEN, AlertState.ACKNOWLEDGED


@pytest.mark.parametrize(
    ("rota", "level", "state", "due_at", "expect_level", "expect_vets"),
    [
        # first page: primary at once
        (FULL, 0, OPEN, NOW, 1, [PRIMARY]),
        (FULL, 0, OPEN, NOW - timedelta(hours=1), 1, [PRIMARY]),
        # unacknowledged at the timeout: the next level
        (FULL, 1, OPEN, NOW, 2, [BACKUP]),
        (FULL, 2, OPEN, NOW, 3, [LEAD, LEAD2]),
        # after the last level: the last level again
        (FULL, 3, OPEN, NOW, 3, [LEAD, LEAD2]),
        # an empty level (or one with only a phone number) is skipped
        (NO_BACKUP, 1, OPEN, NOW, 3, [LEAD, LEAD2]),
        # only primary staffed: primary again and again
        (PRIMARY_ONLY, 1, OPEN, NOW, 1, [PRIMARY]),
        # a re-page of lead (level stepped back to 2) pages lead again
        (FULL, 2, OPEN, NOW - timedelta(seconds=1), 3, [LEAD, LEAD2]),
    ],
)
def test_due_alert_pages_the_next_level(
    rota: dict[OnCallLevel, list[RotaMember]],
    level: int,
    state: AlertState,
    due_at: datetime,
    expect_level: int,
    expect_vets: list[uuid.UUID],
) -> None:
    plan = next_actions(AlertSnapshot(level, state, due_at), rota, now=NOW, timeout=TIMEOUT)
    assert plan.due
    assert plan.new_level == expect_level
    assert [p.veterinarian_id for p in plan.pages] == expect_vets
    assert {p.level for p in plan.pages} == {expect_level}
    assert plan.next_action_at == NOW + TIMEOUT
    assert not plan.unstaffed


@pytest.mark.parametrize(
    ("level", "state", "due_at"),
    [
        (1, ACKED, NOW),  # acknowledged: nothing, ever
        (1, AlertState.RESOLVED, NOW),
        (1, OPEN, NOW + timedelta(seconds=1)),  # not yet due
        (0, OPEN, None),
    ],
)
def test_nothing_when_not_due(level: int, state: AlertState, due_at: datetime | None) -> None:
    plan = next_actions(AlertSnapshot(level, state, due_at), FULL, now=NOW, timeout=TIMEOUT)
    assert not plan.due
    assert plan.pages == ()
    assert plan.new_level == level
    assert plan.next_action_at == due_at


def test_nobody_on_call_looks_again_after_timeout() -> None:
    plan = next_actions(AlertSnapshot(0, OPEN, NOW), {}, now=NOW, timeout=TIMEOUT)
    assert plan.due
    assert plan.unstaffed
    assert plan.pages == ()
    assert plan.new_level == 0
    assert plan.next_action_at == NOW + TIMEOUT


def test_first_usable_contact_by_priority() -> None:
    rota = {
        OnCallLevel.PRIMARY: [
            member(
                PRIMARY,
                (ContactKind.EMAIL, "later@x", 5),
                (ContactKind.PHONE, "+0", 0),
                (ContactKind.SMS, "+1", 1),
            )
        ]
    }
    plan = next_actions(AlertSnapshot(0, OPEN, NOW), rota, now=NOW, timeout=TIMEOUT)
    assert [(p.channel, p.target) for p in plan.pages] == [(PageChannel.SMS, "+1")]
    # without an SMS channel configured, the email contact is used instead
    plan = next_actions(
        AlertSnapshot(0, OPEN, NOW),
        rota,
        now=NOW,
        timeout=TIMEOUT,
        channels={PageChannel.EMAIL, PageChannel.WEBHOOK},
    )
    assert [(p.channel, p.target) for p in plan.pages] == [(PageChannel.EMAIL, "later@x")]


CONTACTS = [
    Contact(ContactKind.SMS, "+1", 0),
    Contact(ContactKind.PHONE, "+2", 1),
    Contact(ContactKind.EMAIL, "a@x", 2),
    Contact(ContactKind.WEBHOOK, "https://h", 3),
]


@pytest.mark.parametrize(
    ("failed", "channels", "expected"),
    [
        ((PageChannel.SMS, "+1"), None, (PageChannel.EMAIL, "a@x")),
        ((PageChannel.EMAIL, "a@x"), None, (PageChannel.WEBHOOK, "https://h")),
        ((PageChannel.WEBHOOK, "https://h"), None, None),
        (
            (PageChannel.SMS, "+1"),
            {PageChannel.SMS, PageChannel.WEBHOOK},
            (PageChannel.WEBHOOK, "https://h"),
        ),
        # an address no longer listed: start from the top
        ((PageChannel.SMS, "+old"), None, (PageChannel.SMS, "+1")),
    ],
)
def test_fallback_contact(
    failed: tuple[PageChannel, str],
    channels: set[PageChannel] | None,
    expected: tuple[PageChannel, str] | None,
) -> None:
    got = fallback_contact(
        CONTACTS, failed_channel=failed[0], failed_target=failed[1], channels=channels
    )
    assert got == expected
