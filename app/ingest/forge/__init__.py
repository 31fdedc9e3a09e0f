"""Forge lifecycle calls (SPEC §10): ids, FIT verification, JWKS, the installation
decider, the ingestion shell and its routes."""
