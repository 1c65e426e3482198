"""The parse stage: raw stored messages read into structures the mapping stage can use (pure)."""
