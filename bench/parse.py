"""ER7 reader throughput: our reader beside hl7apy and python-hl7, on the same messages, one core.

    .venv/bin/python bench/parse.py [--min-seconds 1]

The message is the 20-OBX ORU^R01 (about 5 kB) of bench/mllp.py. Each reader parses it and then
reads every component of OBX-3, -5, -6, -7 and -8 of every OBX, so a lazy reader pays for what the
mapping stage will read. Each measurement repeats until it has run at least --min-seconds; all
are taken in this one run, in this one process. python-hl7 is not a dependency: if it is not
importable (``.venv/bin/pip install hl7`` locally) it is skipped with a note.
Goals (issue 4): ours >= 10,000 msg/s, >= 500x hl7apy, >= 20x python-hl7.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from mllp import oru_r01
from vetgateway.pipeline.parse.er7 import parse_er7

OBX_FIELDS = (3, 5, 6, 7, 8)


def ours(raw: bytes) -> int:
    touched = 0
    for obx in parse_er7(raw).segments_named("OBX"):
        for n in OBX_FIELDS:
            touched += len(obx.components(n))
    return touched


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


def python_hl7_reader() -> Callable[[bytes], int] | None:
    try:
        import hl7
    except ImportError:
        return None

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


def rate(read: Callable[[bytes], int], messages: list[bytes], min_seconds: float) -> float:
    """Messages per second, repeating the whole list until at least ``min_seconds`` passed."""
    done = 0
    start = time.perf_counter()
    while True:
        for raw in messages:
            read(raw)
        done += len(messages)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-seconds", type=float, default=1.0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    messages = [oru_r01(f"BENCH{i:04d}") for i in range(50)]
    touched = ours(messages[0])
    print(f"message: ORU^R01, 20 OBX, {len(messages[0])} bytes; {touched} components touched")
    readers: list[tuple[str, Callable[[bytes], int]]] = [("vetgateway er7", ours)]
    readers.append(("hl7apy 1.3.5", hl7apy_reader()))
    python_hl7 = python_hl7_reader()
    if python_hl7 is None:
        print("python-hl7: not importable, skipped (.venv/bin/pip install hl7 to include it)")
    else:
        readers.append(("python-hl7", python_hl7))
    results = [(label, rate(read, messages, args.min_seconds)) for label, read in readers]
    base = results[0][1]
    for label, per_second in results:
        print(f"{label:16} {per_second:12,.0f} msg/s   ours/this = {base / per_second:8.1f}x")


if __name__ == "__main__":
    main()
