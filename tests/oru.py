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


# A chemistry panel as EXAMPLE_REFLAB (src/vetgateway/catalogue/data) sends it: its own codes,
# US units. (code, name, value, unit, lab range, flag)
PANEL: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("GLUC", "Glucose", "97", "mg/dL", "70-143", "N"),
    ("BUN", "Urea nitrogen", "18", "mg/dL", "7-27", "N"),
    ("CREAT", "Creatinine", "1.1", "mg/dL", "0.5-1.8", "N"),
    ("ALT", "ALT", "45", "U/L", "10-125", "N"),
    ("ALKP", "ALP", "210", "U/L", "23-212", "N"),
    ("AST", "AST", "30", "U/L", "0-50", "N"),
    ("GGT", "GGT", "4", "U/L", "0-11", "N"),
    ("TBILI", "Total bilirubin", "0.3", "mg/dL", "0.0-0.9", "N"),
    ("TPRO", "Total protein", "6.5", "g/dL", "5.2-8.2", "N"),
    ("ALB", "Albumin", "3.1", "g/dL", "2.3-4.0", "N"),
    ("GLOB", "Globulin", "3.4", "g/dL", "2.5-4.5", "N"),
    ("CHOL", "Cholesterol", "220", "mg/dL", "110-320", "N"),
    ("TRIG", "Triglycerides", "80", "mg/dL", "10-100", "N"),
    ("AMYL", "Amylase", "700", "U/L", "500-1500", "N"),
    ("LIPA", "Lipase", "300", "U/L", "200-1800", "N"),
    ("CK", "Creatine kinase", "150", "U/L", "10-200", "N"),
    ("PHOS", "Phosphorus", "4.2", "mg/dL", "2.5-6.8", "N"),
    ("CA", "Calcium", "12.9", "mg/dL", "7.9-12.0", "H"),
    ("NA", "Sodium", "147", "mEq/L", "144-160", "N"),
    ("K", "Potassium", "4.5", "mEq/L", "3.5-5.8", "N"),
)


def vet_oru(
    control_id: str,
    *,
    accession: str,
    results: tuple[tuple[str, str, str, str, str, str], ...] = PANEL,
    pms_id: str = "PMS-4711",
    patient: str = "Rex",
    owner: str = "Smith",
    species: str = "Canine",
    report_status: str = "F",
    result_status: str | None = None,
    facility: str = "EXAMPLE_REFLAB",
    observed: str = "20261126113000",
) -> bytes:
    """A veterinary ORU^R01 (v2.5.1) from a reference lab: one patient, one report."""
    status = result_status or report_status
    segments = [
        f"MSH|^~\\&|LIS|{facility}|VETGATEWAY|CLINIC|20261126120000||ORU^R01^ORU_R01|{control_id}"
        "|P|2.5.1",
        _pid(pms_id=pms_id, name=f"{owner}^{patient}", species=species),
        f"ORC|RE|{accession}|{accession}-F",
        f"OBR|1|{accession}|{accession}-F|CHEM^Chemistry panel|||{observed}|||||||||||"
        f"{accession}||||20261126115500||CH|{report_status}",
    ]
    segments += [
        f"OBX|{i}|NM|{code}^{name}^L||{value}|{unit}|{range_}|{flag}|||{status}|||{observed}"
        for i, (code, name, value, unit, range_, flag) in enumerate(results, start=1)
    ]
    return ("\r".join(segments) + "\r").encode()


def _pid(*, pms_id: str, name: str, species: str) -> str:
    fields = [""] * 36
    fields[0] = "PID"
    fields[1] = "1"
    fields[3] = f"{pms_id}^^^CLINIC^PI" if pms_id else ""
    fields[5] = name
    fields[7] = "20200301"
    fields[8] = "M"
    fields[35] = species
    return "|".join(fields)
