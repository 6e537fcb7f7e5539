"""Metrics and traces of one service, made once in its ``build`` and handed
to its servicer, its worker's hooks and :func:`~.server.start_server`."""

from __future__ import annotations

from .metrics import ServiceMetrics
from .observed_store import ObservedStore
from .settings import ServerSettings
from .tracing import Tracing


class Telemetry:
    """Args: settings: the service's settings (tracing fields); service: its
    short name (``depth``, ``caption``, ``inversion``, ``editor``)."""

    def __init__(self, settings: ServerSettings, service: str):
        self.service = service
        self.metrics = ServiceMetrics(service)
        self.tracing = Tracing(settings, service)

    def observe_store(self, store) -> ObservedStore:
        """``store`` with every operation counted, timed and traced."""
        return ObservedStore(store, self.metrics, self.tracing)
