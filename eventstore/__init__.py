"""The append-only log: event catalog, stores, hash chain, encryption of sensitive fields."""
