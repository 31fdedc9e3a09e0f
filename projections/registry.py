"""Every read model by name: the folds the runner feeds and a rebuild replays, and how
their states are resumed from their rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from eventstore.values import RecordedEvent
from projections.base_urls import BaseUrlsProjection, BaseUrlsState
from projections.descriptors import DescriptorsProjection, DescriptorsState
from projections.installations import InstallationsProjection, LinksProjection, forge_states
from projections.reimports import ReimportsProjection, ReimportsState
from projections.storage.base import ProjectionStorage
from projections.tenants import TenantsProjection, TenantsState

PROJECTIONS: Final[dict[str, Any]] = {
    "tenants": TenantsProjection(),
    "descriptors": DescriptorsProjection(),
    "base_urls": BaseUrlsProjection(),
    "reimports": ReimportsProjection(),
    "installations": InstallationsProjection(),
    "links": LinksProjection(),
}



def chunks(events: Iterator[RecordedEvent], size: int) -> Iterator[list[RecordedEvent]]:
    batch: list[RecordedEvent] = []
    for event in events:
        batch.append(event)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch



def resume_states(storage: ProjectionStorage) -> dict[str, Any]:
    """Every fold's state rebuilt from its persisted rows (at their checkpoint)."""
    tenants = storage.load_rows("tenants")
    base_urls = storage.load_rows("base_urls")
    return {
        "tenants": TenantsState.from_rows(tenants),
        "descriptors": DescriptorsState.from_rows(storage.load_rows("descriptors"), tenants),
        "base_urls": BaseUrlsState.from_rows(base_urls),
        "reimports": ReimportsState.from_rows(base_urls),
        **forge_states(storage.load_rows("installations"), storage.load_rows("links")),
    }

