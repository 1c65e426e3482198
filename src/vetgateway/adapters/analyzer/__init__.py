"""Analyzer lines: the transports (serial, TCP listener, TCP client) and the runner that drives a
sans-I/O line station (ASTM E1381 or plain text) over them."""
