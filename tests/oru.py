"""Distinct, valid ORU^R01 messages (HL7 v2.5.1, original mode) for stream tests."""

from __future__ import annotations


def oru_r01(control_id: str, *, observations: int = 5, sender: str = "IDEXX") -> bytes:
    """An ORU^R01 from ``sender`` whose MSH-10 is ``control_id``; the bytes differ per id."""
    segments = [
        f"MSH|^~\\&|{sender}|REFLAB|VETGATEWAY|CLINIC|20261126120000||ORU^R01^ORU_R01|{control_id}"
        "|P|2.5.1",
        "PID|1||PMS-4711^^^CLINIC^PI||REX^^^^^^L|||M|||||||||||||||||||||||CANINE",
        f"OBR|1|ORD-{control_id}|LAB-{control_id}|CHEM^Chemistry panel|||20261126113000|||||||||"
        "||||||20261126115500||CH|F",
    ]
    segments += [
        f"OBX|{i}|NM|GLU{i}^Glucose {i}^LN||5.{i % 10}|mmol/L|3.9-7.8|N|||F|||20261126115500"
        for i in range(1, observations + 1)
    ]
    return ("\r".join(segments) + "\r").encode()
