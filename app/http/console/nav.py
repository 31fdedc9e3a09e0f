"""The console's navigation, in one place: (section, label, path), in the order shown.

A new page adds its entry here (``NAV.append`` from its own module works too); the
section is what a route passes to ``_page`` so its entry is highlighted.
"""

from __future__ import annotations

NAV: list[tuple[str, str, str]] = [
    ("tenants", "Tenants", "/console"),
    ("installations", "Installations", "/console/installations"),
    ("links", "Links", "/console/links"),
    ("migration", "Migration", "/console/migration"),
    ("reimports", "Reimports", "/console/reimports"),
    ("descriptors", "Descriptors", "/console/descriptors"),
    ("presumed-gone", "Presumed gone", "/console/presumed-gone"),
    ("rejections", "Rejections", "/console/rejections"),
    ("erasure-due", "Erasure due", "/console/erasure-due"),
    ("events", "Events", "/console/events"),
    ("webhooks", "Webhooks", "/console/webhooks"),
    ("integrity", "Integrity", "/console/integrity"),
]
