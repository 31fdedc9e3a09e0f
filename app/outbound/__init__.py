"""Standard Webhooks delivery of the log to the vendor's app (SPEC §11)."""
