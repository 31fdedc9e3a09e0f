"""eventstore/postgres."""
