"""A minimal vendor app that keeps no tenant and no secret: it asks the tenant ledger
(SPEC §11). See README.md."""
