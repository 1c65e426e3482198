"""Whom to page for an alert, and when to look again: a pure function of the alert and the rota.

The rules (``next_actions``), with the clock passed in:

- Levels are paged in order primary (1) → backup (2) → lead (3). ``Alert.level`` is the level
  reached so far; 0 before the first page.
- An alert that is not open (acknowledged, resolved) gets nothing; neither does one whose
  ``next_action_at`` is unset or still in the future.
- A due alert pages the next level above the one reached, at once, and is due again
  ``timeout`` later. A level with nobody on call (or nobody with a contact a page can use) is
  skipped. Earlier levels are not paged again: their pages stand.
- Past the last staffed level, the last staffed level is paged again every ``timeout`` until
  someone acknowledges.
- With nobody on call at all the plan has no pages, keeps the level and is due again after
  ``timeout`` (``Plan.unstaffed``), so a rota loaded later is used.
- Each veterinarian at the level is paged on their first usable contact (lowest ``priority``
  number; phone contacts cannot be paged). If that channel fails for good, the pager falls back to
  the veterinarian's next contact with ``fallback_contact``: the planner does not pre-plan
  fallbacks, so a fallback is chosen from the contacts as they are when the failure is known.

To page a level again (a corrected value, RELIABILITY R40) the store steps ``level`` back by one
and makes the alert due: the rules above then page that same level.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from vetgateway.store.models.alerts import AlertState, PageChannel
from vetgateway.store.models.clinics import ContactKind, OnCallLevel

__all__ = [
    "LEVELS",
    "AlertSnapshot",
    "Contact",
    "Plan",
    "PlannedPage",
    "Rota",
    "RotaMember",
    "channel_for",
    "fallback_contact",
    "level_number",
    "next_actions",
]

LEVELS: tuple[OnCallLevel, ...] = (OnCallLevel.PRIMARY, OnCallLevel.BACKUP, OnCallLevel.LEAD)
"""Escalation order; a level's number is its position here plus one."""

_CHANNELS: Mapping[ContactKind, PageChannel] = {
    ContactKind.EMAIL: PageChannel.EMAIL,
    ContactKind.SMS: PageChannel.SMS,
    ContactKind.WEBHOOK: PageChannel.WEBHOOK,
}


@dataclass(frozen=True, slots=True)
class Contact:
    kind: ContactKind
    address: str
    priority: int


@dataclass(frozen=True, slots=True)
class RotaMember:
    """One veterinarian on call, with contacts in the order to try them (lowest priority first)."""

    veterinarian_id: uuid.UUID
    contacts: tuple[Contact, ...]


Rota = Mapping[OnCallLevel, Sequence[RotaMember]]


@dataclass(frozen=True, slots=True)
class AlertSnapshot:
    level: int
    state: AlertState
    next_action_at: datetime | None


@dataclass(frozen=True, slots=True)
class PlannedPage:
    level: int
    veterinarian_id: uuid.UUID
    channel: PageChannel
    target: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now. ``due`` is False when nothing was due (the alert is left as it is)."""

    due: bool
    pages: tuple[PlannedPage, ...]
    new_level: int
    next_action_at: datetime | None
    unstaffed: bool = False


def level_number(level: OnCallLevel) -> int:
    return LEVELS.index(level) + 1


def channel_for(kind: ContactKind) -> PageChannel | None:
    """The page channel for a contact kind; None for kinds a page cannot use (phone)."""
    return _CHANNELS.get(kind)


def _usable(contact: Contact, channels: Collection[PageChannel] | None) -> PageChannel | None:
    channel = channel_for(contact.kind)
    if channel is None or (channels is not None and channel not in channels):
        return None
    return channel


def _ordered(contacts: Sequence[Contact]) -> list[Contact]:
    return sorted(contacts, key=lambda c: c.priority)


def _first_page(
    member: RotaMember, level: int, channels: Collection[PageChannel] | None
) -> PlannedPage | None:
    for contact in _ordered(member.contacts):
        channel = _usable(contact, channels)
        if channel is not None:
            return PlannedPage(level, member.veterinarian_id, channel, contact.address)
    return None


def _pages_for(
    rota: Rota, level: int, channels: Collection[PageChannel] | None
) -> tuple[PlannedPage, ...]:
    pages = []
    for member in rota.get(LEVELS[level - 1], ()):
        page = _first_page(member, level, channels)
        if page is not None:
            pages.append(page)
    return tuple(pages)


def next_actions(
    alert: AlertSnapshot,
    rota: Rota,
    *,
    now: datetime,
    timeout: timedelta,
    channels: Collection[PageChannel] | None = None,
) -> Plan:
    """The pages to send now and when to look at the alert again (rules in the module doc).

    ``channels``, when given, limits pages to channels the caller can deliver on; a contact on
    another channel is treated like a phone number (skipped).
    """
    if (
        alert.state is not AlertState.OPEN
        or alert.next_action_at is None
        or alert.next_action_at > now
    ):
        return Plan(False, (), alert.level, alert.next_action_at)
    staffed = {n: _pages_for(rota, n, channels) for n in range(1, len(LEVELS) + 1)}
    staffed = {n: pages for n, pages in staffed.items() if pages}
    if not staffed:
        return Plan(True, (), alert.level, now + timeout, unstaffed=True)
    higher = [n for n in staffed if n > alert.level]
    level = min(higher) if higher else max(staffed)
    return Plan(True, staffed[level], level, now + timeout)


def fallback_contact(
    contacts: Sequence[Contact],
    *,
    failed_channel: PageChannel,
    failed_target: str,
    channels: Collection[PageChannel] | None = None,
) -> tuple[PageChannel, str] | None:
    """The usable contact after the one that failed, in priority order; None when none is left.

    A contact that is no longer listed (changed since the page was made) counts as the first, so
    the fallback starts from the top of the list, never repeating the failed address.
    """
    ordered = _ordered(contacts)
    start = 0
    for index, contact in enumerate(ordered):
        if channel_for(contact.kind) is failed_channel and contact.address == failed_target:
            start = index + 1
            break
    for contact in ordered[start:]:
        channel = _usable(contact, channels)
        if channel is not None and not (
            channel is failed_channel and contact.address == failed_target
        ):
            return channel, contact.address
    return None
