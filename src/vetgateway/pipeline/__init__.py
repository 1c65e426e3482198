"""The result pipeline: broker set-up, thin idempotent actors, and the pure stages they call."""
