"""ASTM over serial or TCP: the CLSI LIS1-A (ASTM E1381) low-level link, sans-I/O, in ``e1381``."""
