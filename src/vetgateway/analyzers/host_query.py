"""Answering an analyzer's host query over its own line (issue 6 §6).

The intake stores the query first (it is a message like any other), then calls this: the Q
records are read with the device's driver, the pending orders of each specimen id are fetched
(``store.host_orders``) and turned into the analyzer's own test codes, and the answer message is
returned for the line to send (``adapters.astm.order_records``).

Codes: a catalogue test is sent under the code the analyzer's code map gives it (the reverse of
the mapping used for its results, ``AnalyzerCodes``). When the analyzer's source has a code map,
tests it does not map are left out — the analyzer cannot run them; without a code map the codes
go as ordered.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from vetgateway.adapters.astm.order_records import SpecimenOrders, build_order_answer
from vetgateway.analyzers.drivers import driver_named
from vetgateway.errors import ParseError
from vetgateway.model import HostQuery, Sex
from vetgateway.pipeline.mapping import MappingTable, source_key
from vetgateway.store.db import Database
from vetgateway.store.devices import DeviceView
from vetgateway.store.host_orders import PendingOrder, pending_for_sample
from vetgateway.store.models.base import utcnow

__all__ = ["AnalyzerCodes", "HostQueryAnswerer", "specimen_orders"]

log = logging.getLogger(__name__)

SENDER = "VETGATEWAY"
_SEX = {Sex.MALE: "M", Sex.MALE_NEUTERED: "M", Sex.FEMALE: "F", Sex.FEMALE_SPAYED: "F"}


@dataclass(frozen=True, slots=True)
class AnalyzerCodes:
    """Catalogue tests in one analyzer's codes: the reverse of its code map.

    An order item is known by its catalogue test id when it has one, else by the code the PMS
    ordered it under, which is a catalogue code or (a PMS that knows the analyzer) the analyzer's
    own code. ``mapped`` False means the analyzer has no code map: codes go as ordered.
    """

    by_test_code: dict[str, str]
    test_codes: dict[uuid.UUID, str]
    own_codes: frozenset[str]
    mapped: bool

    @classmethod
    def from_table(cls, table: MappingTable, source: str) -> AnalyzerCodes:
        test_codes = {entry.test_id: entry.code.upper() for entry in table.entries}
        by_test_code: dict[str, str] = {}
        own: set[str] = set()
        for rule in table.rules:
            if rule.source != source:
                continue
            own.add(rule.source_code.upper())
            if rule.test_id is not None and rule.test_id in test_codes:
                by_test_code.setdefault(test_codes[rule.test_id], rule.source_code)
        return cls(by_test_code, test_codes, frozenset(own), bool(own))

    def code_for(self, test_id: uuid.UUID | None, ordered_code: str) -> str | None:
        """The analyzer's code for an order item; None when the analyzer cannot run it."""
        if not self.mapped:
            return ordered_code
        key = self.test_codes.get(test_id) if test_id else None
        key = key or ordered_code.strip().upper()
        if key in self.by_test_code:
            return self.by_test_code[key]
        return ordered_code.strip() if key in self.own_codes else None


def specimen_orders(
    sample_id: str, orders: list[PendingOrder], codes: AnalyzerCodes
) -> SpecimenOrders:
    """What to answer for one specimen: its pending tests in the analyzer's codes."""
    wanted: list[str] = []
    for order in orders:
        for test_id, ordered_code in order.tests:
            code = codes.code_for(test_id, ordered_code)
            if code and code not in wanted:
                wanted.append(code)
    first = orders[0] if orders else None
    return SpecimenOrders(
        sample_id=sample_id,
        codes=tuple(wanted),
        patient_id=first.patient_pms_id if first else None,
        patient_name=first.patient_name if first else None,
        owner_surname=first.owner_surname if first else None,
        sex=_SEX.get(first.sex, "U") if first and first.sex else None,
        birth_date=first.birth_date if first else None,
    )


class HostQueryAnswerer:
    """``await answerer(text, device)`` → the answer messages (empty when there is no query)."""

    def __init__(
        self,
        db: Database,
        pool: Executor,
        tables: Callable[[], MappingTable],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._pool = pool
        self._tables = tables
        self._clock = clock

    async def __call__(self, text: bytes, device: DeviceView | None) -> tuple[bytes, ...]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.answer, text, device)

    def answer(self, text: bytes, device: DeviceView | None) -> tuple[bytes, ...]:
        driver = driver_named(device.driver if device else None, error=ParseError)
        try:
            message = driver.parse(text)
        except ParseError as exc:  # stored already; the pipeline quarantines it with the reason
            log.warning("host query not answered: unreadable", extra={"reason": str(exc)})
            return ()
        if not message.queries:
            return ()
        source = driver.source or source_key("", message.sender or "")
        codes = AnalyzerCodes.from_table(self._tables(), source)
        specimens = []
        with self._db.session(readonly=True) as session:
            for query in message.queries:
                specimens.extend(self._answer_one(session, query, codes))
        return (build_order_answer(specimens, sender=SENDER, now=self._clock()),)

    @staticmethod
    def _answer_one(
        session: Session, query: HostQuery, codes: AnalyzerCodes
    ) -> list[SpecimenOrders]:
        return [
            specimen_orders(sample_id, pending_for_sample(session, sample_id), codes)
            for sample_id in query.sample_ids
        ]
