"""HL7 parsing throughput on one core: our ER7 reader and our full ORU parse beside hl7apy and
python-hl7, on the same messages, in one run.

    .venv/bin/python bench/parse.py [--min-seconds 1] [--rounds 5]

The messages are 50 copies of the 20-OBX ORU^R01 (about 5 kB) of bench/mllp.py, each with its own
control ID. Readers:

- ``vetgateway er7``: ``parse_er7`` and then every component of OBX-3, -5, -6, -7 and -8 of every
  OBX, so a lazy reader pays for what the mapping stage will read.
- ``vetgateway parse_oru``: the whole stage, bytes to the canonical ``ParsedMessage`` (patient,
  report, 20 observations with numbers, ranges, flags and times).
- ``hl7apy`` (find_groups off, tolerant) and ``python-hl7``: parse, then read the same OBX
  components as the er7 line. They stop at a tree of strings, so against them parse_oru does
  strictly more work.

Each reader reads the messages in turn for --min-seconds, split into --rounds rounds, and its
rate is that of its best round (see ``rate``); all are measured in this one process, one after
another, pinned to one core. python-hl7 is a development dependency for this comparison only.
The ratio columns divide our rate by each line's rate. Goals (issue 4): parse_oru >= 10,000
msg/s; the reader >= 500x hl7apy and >= 20x python-hl7.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from mllp import oru_r01
from vetgateway.pipeline.parse.er7 import parse_er7
from vetgateway.pipeline.parse.oru import parse_oru

OBX_FIELDS = (3, 5, 6, 7, 8)


def ours(raw: bytes) -> int:
    touched = 0
    for obx in parse_er7(raw).segments_named("OBX"):
        for n in OBX_FIELDS:
            touched += len(obx.components(n))
    return touched


def ours_full(raw: bytes) -> int:
    return sum(len(report.observations) for report in parse_oru(raw).reports)


def hl7apy_reader() -> Callable[[bytes], int]:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    def read(raw: bytes) -> int:
        msg = parse_message(
            raw.decode(), find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT
        )
        touched = 0
        for seg in msg.children:
            if seg.name != "OBX":
                continue
            for fld in seg.children:
                if int(fld.name.rsplit("_", 1)[1]) in OBX_FIELDS:
                    touched += len([c.to_er7() for c in fld.children])
        return touched

    return read


def python_hl7_reader() -> Callable[[bytes], int]:
    import hl7

    def read(raw: bytes) -> int:
        msg: Any = hl7.parse(raw.decode())
        touched = 0
        for seg in msg.segments("OBX"):
            for n in OBX_FIELDS:
                field = seg[n] if n < len(seg) else []
                reps = field if isinstance(field, hl7.containers.Field) else [field]
                for rep in reps[:1]:
                    touched += len([str(c) for c in rep]) if isinstance(rep, list) else 1
        return touched

    return read


def rate(read: Callable[[bytes], int], messages: list[bytes], seconds: float, rounds: int) -> float:
    """Messages per second in the best of ``rounds`` rounds of at least ``seconds / rounds`` each.

    The best round is the one the rest of the machine disturbed least (timeit's reasoning); every
    reader is measured the same way, so the ratios compare like with like.
    """
    best = 0.0
    feed = itertools.cycle(messages)
    for _ in range(rounds):
        done = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / rounds or not done:
            read(next(feed))
            done += 1
        best = max(best, done / elapsed)
    return best


def label(package: str, name: str) -> str:
    try:
        return f"{name} {version(package)}"
    except PackageNotFoundError:
        return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-seconds", type=float, default=1.0, help="per reader, all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    messages = [oru_r01(f"BENCH{i:04d}") for i in range(50)]
    touched = ours(messages[0])
    results = ours_full(messages[0])
    print(
        f"message: ORU^R01, 20 OBX, {len(messages[0])} bytes; {touched} components touched "
        f"(readers), {results} observations built (parse_oru)"
    )
    readers: list[tuple[str, Callable[[bytes], int]]] = [
        ("vetgateway er7", ours),
        ("vetgateway parse_oru", ours_full),
        (label("hl7apy", "hl7apy"), hl7apy_reader()),
        (label("hl7", "python-hl7"), python_hl7_reader()),
    ]
    results_per_second = [
        (name, rate(read, messages, args.min_seconds, args.rounds)) for name, read in readers
    ]
    reader, full = results_per_second[0][1], results_per_second[1][1]
    print(f"{'':22} {'msg/s':>12}   {'er7/this':>9}   {'parse_oru/this':>14}")
    for name, per_second in results_per_second:
        print(
            f"{name:22} {per_second:12,.0f}   {reader / per_second:8.1f}x   "
            f"{full / per_second:13.1f}x"
        )


if __name__ == "__main__":
    main()
