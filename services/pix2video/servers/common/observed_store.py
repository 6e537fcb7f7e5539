"""An ObjectStore decorator that counts, times and traces every operation.

The services hand it to the workers and engine code in place of the store itself; the
code still sees only the :class:`~pix2video.store.ObjectStore`
interface. Results: ``ok``, ``not_found`` (a missing key, a normal answer to
``get``), ``conflict`` (a conditional write that found the object not as
expected: another replica won a lease race, a normal answer too) and ``error``
(anything else: the store is down, refused, ...). The conditional writes that
leases use (see :mod:`pix2video.store.conditional`) count as ``put`` and
``get``, so a lease shows in the metrics and traces like any other write.
A span per operation is recorded only under a span of the service (a job or
a call); reads from the editor's scheduler thread are counted, not traced.
"""

from __future__ import annotations

import time

from opentelemetry.trace import Status, StatusCode

from ...errors import NotFound
from ...store.base import ObjectStore
from ...store.conditional import WriteConflict

OPERATIONS = ("put", "get", "exists", "delete_prefix")
RESULTS = ("ok", "not_found", "conflict", "error")


class ObservedStore(ObjectStore):
    """Wraps ``inner``; other attributes (``check``, ``close``, ...) pass through.

    Args:
        inner: the store.
        metrics: a :class:`~.metrics.ServiceMetrics` (store counters and histogram).
        tracing: a :class:`~.tracing.Tracing`.
    """

    def __init__(self, inner: ObjectStore, metrics, tracing):
        self.inner = inner
        self._ops = {(op, r): metrics.store_operations.labels(op, r) for op in OPERATIONS for r in RESULTS}
        self._seconds = {op: metrics.store_seconds.labels(op) for op in OPERATIONS}
        self._bytes = {op: metrics.store_bytes.labels(op) for op in ("put", "get")}
        self._tracing = tracing

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"ObservedStore({self.inner!r})"

    def _run(self, op: str, key: str, fn, *args):
        if self._tracing.recording():
            with self._tracing.tracer.start_as_current_span(
                f"store {op}",
                attributes={"pix2video.store.key": key},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    return self._count(op, fn, *args)
                except NotFound:
                    span.set_attribute("pix2video.store.result", "not_found")
                    raise
                except WriteConflict:
                    span.set_attribute("pix2video.store.result", "conflict")
                    raise
                except Exception as exc:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                    raise
        return self._count(op, fn, *args)

    def _count(self, op: str, fn, *args):
        start = time.perf_counter()
        result = "error"
        try:
            out = fn(*args)
            result = "ok"
            return out
        except NotFound:
            result = "not_found"
            raise
        except WriteConflict:
            result = "conflict"
            raise
        finally:
            self._seconds[op].observe(time.perf_counter() - start)
            self._ops[(op, result)].inc()

    def put(self, key: str, data: bytes) -> None:
        self._run("put", key, self.inner.put, key, data)
        self._bytes["put"].inc(len(data))

    def get(self, key: str) -> bytes:
        data = self._run("get", key, self.inner.get, key)
        self._bytes["get"].inc(len(data))
        return data

    def exists(self, key: str) -> bool:
        return self._run("exists", key, self.inner.exists, key)

    def delete_prefix(self, prefix: str) -> None:
        self._run("delete_prefix", prefix, self.inner.delete_prefix, prefix)

    # Conditional writes (leases): present only when the inner store has them, since
    # pix2video.store.conditional finds them by conditional_writes(), which passes through.
    def get_tagged(self, key: str) -> tuple[bytes, str]:
        data, tag = self._run("get", key, self.inner.get_tagged, key)  # type: ignore[attr-defined]
        self._bytes["get"].inc(len(data))
        return data, tag

    def put_if_absent(self, key: str, data: bytes) -> str:
        tag = self._run("put", key, self.inner.put_if_absent, key, data)  # type: ignore[attr-defined]
        self._bytes["put"].inc(len(data))
        return tag

    def put_if_tag(self, key: str, data: bytes, tag: str) -> str:
        new = self._run("put", key, self.inner.put_if_tag, key, data, tag)  # type: ignore[attr-defined]
        self._bytes["put"].inc(len(data))
        return new

    # Clean-up and readiness (not counted: rare, and not on a request's path).
    def list(self, prefix: str = ""):
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def check(self) -> None:
        self.inner.check()
