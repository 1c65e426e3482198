"""MLLP (HL7 Minimal Lower Layer Protocol, Release 2): the sans-I/O framer in ``framer``."""
