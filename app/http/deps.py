"""Typed access to what the service holds (``app.bootstrap.Service``), for routes and
their dependencies: one attribute of ``app.state``, set by the lifespan."""

from __future__ import annotations

from fastapi import FastAPI, Request

from app.authority.shell import Authority
from app.bootstrap import Service
from app.ingest.connect.ingestor import LifecycleIngestor
from app.ingest.forge.ingestor import ForgeIngestor
from app.queries.readiness import RunnerView
from app.settings import Settings
from eventstore.crypto import KeyRing
from eventstore.store import EventStore
from projections.storage.base import ProjectionStorage


def attach(app: FastAPI, service: Service) -> None:
    app.state.service = service


def service(request: Request) -> Service:
    held: Service = request.app.state.service
    return held


def settings(request: Request) -> Settings:
    return service(request).settings


def store(request: Request) -> EventStore:
    return service(request).store


def keyring(request: Request) -> KeyRing:
    return service(request).keyring


def connect_ingestor(request: Request) -> LifecycleIngestor:
    return service(request).connect


def forge_ingestor(request: Request) -> ForgeIngestor:
    return service(request).forge


def projections(request: Request) -> ProjectionStorage:
    return service(request).projections


def runner(request: Request) -> RunnerView | None:
    return service(request).runner


def authority(request: Request) -> Authority:
    return service(request).authority
