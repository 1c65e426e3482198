"""HL7 v2 over MLLP: the MLLP server bound to the HL7 intake.

Ordinary messages go through ``Hl7Intake.receive_async``: the header is read on the event loop
and the connection awaits the inbox's group commit without a thread of its own. Messages over
``OFF_LOOP_BYTES`` (reports with embedded PDFs) are handled on ``pool`` instead, so checking a
10 MB message's character set never stalls the other connections.
"""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import Executor

from vetgateway.adapters.hl7.intake import Hl7Intake
from vetgateway.adapters.mllp.server import IncidentHandler, MllpLimits, MllpServer

CHANNEL = "mllp"
OFF_LOOP_BYTES = 256 * 1024


def hl7_mllp_server(
    intake: Hl7Intake,
    pool: Executor,
    *,
    host: str,
    port: int,
    limits: MllpLimits | None = None,
    tls: ssl.SSLContext | None = None,
    on_incident: IncidentHandler | None = None,
) -> MllpServer:
    limits = limits or MllpLimits()

    async def on_frame(payload: bytes, peer: str) -> bytes | None:
        if len(payload) <= OFF_LOOP_BYTES:
            return (await intake.receive_async(payload, CHANNEL, peer)).ack
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(pool, intake.receive, payload, CHANNEL, peer)
        return result.ack

    async def on_too_large(head: bytes, peer: str) -> bytes | None:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            pool, intake.refuse_oversized, head, limits.max_message_size, CHANNEL, peer
        )
        return result.ack

    return MllpServer(
        on_frame,
        host=host,
        port=port,
        limits=limits,
        on_too_large=on_too_large,
        on_incident=on_incident,
        tls=tls,
    )
