"""Plain-text analyzers: a sans-I/O framer that cuts a print-out stream into messages."""
