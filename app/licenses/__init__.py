"""The ledger's own license and presence checks of Connect tenants (SPEC §11)."""
