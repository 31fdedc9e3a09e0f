"""eventstore/testing."""
