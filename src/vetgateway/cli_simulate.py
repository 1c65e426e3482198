"""``vetgateway simulate``: play a device against the gateway, for tests, demos and a clinic's
installation check. The simulators themselves live beside their protocols
(``adapters/astm/simulator.py``); this is their command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vetgateway.cli_support import fail as _fail
from vetgateway.cli_support import load_settings_or_fail as _settings

if TYPE_CHECKING:
    from vetgateway.adapters.astm.simulator_lines import Endpoint

__all__ = ["simulate_app"]

simulate_app = typer.Typer(
    help="Play a device against the gateway, for tests.", no_args_is_help=True
)


def _simulator_endpoint(
    tcp: str | None,
    listen: str | None,
    serial: str | None,
    line: tuple[int, str, int, int],
    baud_pace: bool,
) -> Endpoint:
    """The one line asked for; over TCP paced at the serial rate if ``baud_pace``."""
    from vetgateway.adapters.astm.simulator_lines import (
        SerialDevice,
        SimulatorError,
        TcpDial,
        TcpListen,
        chars_per_second,
        parse_host_port,
    )

    if sum(x is not None for x in (tcp, listen, serial)) != 1:
        _fail("say where to send: exactly one of --tcp, --listen or --serial")
    baud, parity, bytesize, stopbits = line
    if parity.upper() not in ("N", "E", "O") or bytesize not in (7, 8) or stopbits not in (1, 2):
        _fail("--parity is N, E or O; --bytesize 7 or 8; --stopbits 1 or 2")
    if baud <= 0:
        _fail("--baud must be positive")
    if serial is not None:
        if baud_pace:
            _fail("--baud-pace is for --tcp and --listen: a serial port keeps its own pace")
        return SerialDevice(serial, baud, parity.upper(), bytesize, stopbits)
    pace = chars_per_second(baud, bytesize, parity, stopbits) if baud_pace else None
    try:
        host, port = parse_host_port(tcp or listen or "")
    except SimulatorError as exc:
        _fail(f"{'--tcp' if tcp else '--listen'}: {exc}")
    if tcp is not None:
        return TcpDial(host, port, pace)
    return TcpListen(
        host, port, pace, on_listening=lambda h, p: typer.echo(f"listening on {h}:{p}")
    )


def _read_transcripts(files: list[Path], ignore_checksums: bool) -> list[bytes]:
    from vetgateway.adapters.astm.transcripts import read_transcript
    from vetgateway.errors import ParseError

    messages: list[bytes] = []
    for file in files:
        try:
            transcript = read_transcript(file.read_bytes(), ignore_checksums=ignore_checksums)
        except OSError as exc:
            _fail(f"cannot read {file}: {exc.strerror}")
        except ParseError as exc:
            _fail(f"{file}: {exc}")
        for note in transcript.notes:
            typer.echo(f"vetgateway: {file}: {note}", err=True)
        messages.extend(transcript.messages)
    return messages


@simulate_app.command("astm")
def simulate_astm(
    files: Annotated[
        list[Path],
        typer.Argument(help="ASTM transcripts: plain records (CR, CRLF or LF) or framed captures"),
    ],
    tcp: Annotated[
        str | None,
        typer.Option(metavar="HOST:PORT", help="dial the gateway (its ASTM-over-TCP port: 5001)"),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(metavar="HOST:PORT", help="wait for the gateway to dial in (port 0: any)"),
    ] = None,
    serial: Annotated[
        str | None, typer.Option(metavar="DEVICE", help="a serial port, e.g. /dev/ttyUSB0")
    ] = None,
    baud: Annotated[int, typer.Option(help="serial speed (and the --baud-pace rate)")] = 9600,
    parity: Annotated[str, typer.Option(help="N, E or O")] = "N",
    bytesize: Annotated[int, typer.Option(help="7 or 8 data bits")] = 8,
    stopbits: Annotated[int, typer.Option(help="1 or 2 stop bits")] = 1,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KIND[@N,...|~P]",
            help="inject a fault (repeatable): bad-checksum, always-bad-checksum, lost-ack, "
            "drop-mid-message, garbage; on every message, the Nth (@2,5) or with a "
            "probability (~0.3)",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed for random faults (replayable)")] = None,
    interval: Annotated[float, typer.Option(help="seconds between messages")] = 0.0,
    repeat: Annotated[int, typer.Option(help="send the whole list this many times")] = 1,
    baud_pace: Annotated[
        bool, typer.Option("--baud-pace", help="over TCP, write at the --baud rate, as a UART")
    ] = False,
    expect_replies: Annotated[
        bool,
        typer.Option("--expect-replies", help="after a message with a Q record, await the answer"),
    ] = False,
    reply_timeout: Annotated[float, typer.Option(help="seconds to await each answer")] = 30.0,
    packed: Annotated[
        bool,
        typer.Option(
            "--packed", help="send each message in full 247-byte frames, not a record per frame"
        ),
    ] = False,
    ignore_checksums: Annotated[
        bool, typer.Option("--ignore-checksums", help="keep framed frames with a wrong checksum")
    ] = False,
    time_scale: Annotated[float, typer.Option(hidden=True)] = 1.0,
) -> None:
    """Replay ASTM messages as an analyzer would: E1381 framing, ACK/NAK, the LIS1-A timers.

    Prints each message's fate, what the gateway sent back, and a summary; exits 1 if any
    message went unexpectedly (an always-bad-checksum failure is expected), 2 on bad usage.
    """
    from vetgateway.adapters.astm.e1381_frames import LinkUsageError
    from vetgateway.adapters.astm.simulator import (
        MessageOutcome,
        Simulator,
        SimulatorOptions,
        format_summary,
    )
    from vetgateway.adapters.astm.simulator_faults import FaultSpec, FaultSpecError
    from vetgateway.adapters.astm.simulator_lines import SimulatorError

    _settings()
    line = (baud, parity, bytesize, stopbits)
    endpoint = _simulator_endpoint(tcp, listen, serial, line, baud_pace)
    if repeat < 1 or interval < 0 or reply_timeout <= 0 or time_scale <= 0:
        _fail("--repeat must be at least 1; --interval, --reply-timeout positive")
    try:
        faults = tuple(FaultSpec.parse(text) for text in fault or ())
    except FaultSpecError as exc:
        _fail(f"--fault: {exc}")
    messages = _read_transcripts(files, ignore_checksums)
    if not messages:
        _fail("the files hold no messages")

    def outcome(result: MessageOutcome) -> None:
        fate = "acknowledged" if result.delivered else f"failed ({result.reason})"
        kinds = ", ".join(sorted(kind.value for kind in result.faults))
        planned = f"; faults: {kinds}" if kinds else ""
        typer.echo(f"message {result.number}: {fate}{planned}")

    def received(text: bytes) -> None:
        typer.echo("received from the gateway:")
        for record in text.rstrip(b"\r").split(b"\r"):
            typer.echo("  " + record.decode("latin-1"))

    options = SimulatorOptions(
        interval=interval,
        repeat=repeat,
        faults=faults,
        seed=seed,
        expect_replies=expect_replies,
        reply_timeout=reply_timeout,
        time_scale=time_scale,
        packed=packed,
    )
    try:
        simulator = Simulator(endpoint, messages, options, on_received=received, on_outcome=outcome)
    except LinkUsageError as exc:
        _fail(f"a message cannot be framed: {exc}")
    try:
        report = asyncio.run(simulator.run())
    except SimulatorError as exc:
        _fail(str(exc), code=1)
    except KeyboardInterrupt:
        typer.echo(format_summary(simulator.report))
        _fail("interrupted", code=130)
    typer.echo(format_summary(report))
    if not report.ok:
        raise typer.Exit(1)
