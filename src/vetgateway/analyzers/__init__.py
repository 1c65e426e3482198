"""In-house analyzers: their configuration, the driver registry (model → framing, parser dialect,
code map) and the opening hours the silence watch keeps to."""
