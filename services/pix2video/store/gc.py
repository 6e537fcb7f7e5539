"""Clean-up of a latent store: what ``pix2video store gc`` deletes.

* Objects of an attempt that no manifest names (a job that died, or lost a
  race, before writing its manifest; see :mod:`.videos`), once they are older
  than ``grace`` and no live lease says a job is still writing them.
* With ``retention`` set, whole videos whose manifest is older than that: the
  manifest first (readers then see no video), then its objects.
* Leases that expired more than ``grace`` ago (their holders are gone).

It walks the store it is handed; on the bare store it also walks every
tenant's part (``tenants/<tenant>/``), so one CronJob cleans all tenants.
Through a :class:`~.tenant.TenantStore` it sees (and cleans) that tenant only.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import cast

from ..errors import CorruptObject, InvalidInput
from .base import ObjectInfo, ObjectStore
from .lease import LEASE_PREFIX, read_lease
from .videos import read_manifest

log = logging.getLogger(__name__)

TENANTS = "tenants/"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, name: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``30d`` -> seconds; InvalidInput naming ``name`` otherwise."""
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * _UNITS[t[-1]] if t and t[-1] in _UNITS else float(t)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise InvalidInput(f"{name}: expected a duration such as 90s, 15m, 1h or 30d; got {text!r}")
    return value


@dataclass
class GcReport:
    deleted: list[str] = field(default_factory=list)  # keys, relative to the store walked
    bytes: int = 0
    videos_removed: int = 0  # whole videos past retention
    skipped: list[str] = field(default_factory=list)  # video prefixes left alone, with why


def _roots(store: ObjectStore, tenants: bool) -> list[str]:
    roots = [""]
    if tenants:
        names = {info.key[len(TENANTS) :].split("/", 1)[0] for info in store.list(TENANTS)}
        roots += sorted(f"{TENANTS}{t}/" for t in names if t)
    return roots


def collect(
    store: ObjectStore,
    *,
    grace: float,
    retention: float | None = None,
    dry_run: bool = False,
    tenants: bool = True,
    now: float | None = None,
) -> GcReport:
    """Deletes (or with ``dry_run`` only lists) what the module docstring says."""
    if grace < 0:
        raise InvalidInput(f"grace: must be >= 0, got {grace}")
    if retention is not None and retention <= 0:
        raise InvalidInput(f"retention: must be > 0, got {retention}")
    now = time.time() if now is None else now
    report = GcReport()

    def drop(info: ObjectInfo, key: str) -> None:
        report.deleted.append(key)
        report.bytes += info.size
        if not dry_run:
            store.delete(key)

    for root in _roots(store, tenants):
        _collect_root(store, root, grace, retention, now, drop, report)
    return report


def _collect_root(store, root, grace, retention, now, drop, report) -> None:
    videos: dict[str, list[ObjectInfo]] = defaultdict(list)
    for info in store.list(root + "videos/"):
        rest = info.key[len(root + "videos/") :]
        videos[rest.split("/", 1)[0]].append(info)
    for video_id, objects in sorted(videos.items()):
        prefix = f"{root}videos/{video_id}/"
        try:
            manifest = read_manifest(_rooted(store, root), video_id)
        except CorruptObject as exc:
            report.skipped.append(f"{prefix}: {exc}")
            continue  # someone must look at it; deleting evidence is not clean-up
        manifest_info = next((o for o in objects if o.key == prefix + "manifest.json"), None)
        if manifest is not None and retention is not None and manifest_info is not None:
            if manifest_info.modified < now - retention:
                drop(manifest_info, manifest_info.key)
                for o in objects:
                    if o is not manifest_info:
                        drop(o, o.key)
                report.videos_removed += 1
                continue
        keep = prefix + manifest.attempt + "/" if manifest is not None and manifest.attempt else None
        lease = read_lease(_rooted(store, root), "videos/" + video_id)
        writing = lease is not None and lease.live(now)
        for o in objects:
            if o is manifest_info or (keep and o.key.startswith(keep)):
                continue
            if writing:
                continue  # a live job is writing its attempt (its objects may be older than grace)
            if o.modified < now - grace:
                drop(o, o.key)
    for info in store.list(root + LEASE_PREFIX):
        name = info.key[len(root + LEASE_PREFIX) :].removesuffix(".json")
        rec = read_lease(_rooted(store, root), name)
        expired_at = rec.expires if rec is not None else info.modified
        if expired_at < now - grace:
            drop(info, info.key)


def _rooted(store: ObjectStore, root: str) -> ObjectStore:
    # read_manifest and read_lease only call get(): the read-only view stands in for a store.
    return cast(ObjectStore, _Rooted(store, root))


class _Rooted:
    """The read side of ``store`` seen from ``root`` (a tenant's prefix or "")."""

    def __init__(self, store: ObjectStore, root: str):
        self.store, self.root = store, root

    def get(self, key: str) -> bytes:
        return self.store.get(self.root + key)
