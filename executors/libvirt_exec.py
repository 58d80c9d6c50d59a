"""The libvirt executor: each part is a domain ``<request_id>-p<shard>``, each storage copy a volume.

One connection URI per host (the hosts table's ``libvirt_uri``). Domains carry the
part's record in their metadata, so libvirt itself is the source of truth for what
exists; storage-only parts are also catalogued in the state file. A storage copy is
complete when its volume exists: it is cloned from a complete copy (same
connection: ``createXMLFrom``; across connections: a stream download/upload with a
checksum). Connection failures are retried with exponential back-off and then
reported as :class:`HostUnavailable`, which the journal records as the action's failure.

Two hosts may share one connection (the test driver ``test:///default`` does so in
tests): a domain then moves between them by re-tagging its metadata, while its
volumes, named per host, still go make-before-break.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, ClassVar, TypeVar

from shardplan.executors.actions import Action, ActionKind
from shardplan.executors.base import Executor, ExecutorError, HostSpec, HostUnavailable, Part
from shardplan.executors.journal import connect

try:
    import libvirt
except ImportError:  # pragma: no cover - reported when the executor is used
    libvirt = None

METADATA_NS = "https://shardplan.dev/xmlns/part"
METADATA_KEY = "shardplan"
KIB_PER_GIB = 1024 * 1024
GIB = 1024 ** 3
VOLUME_NAME = re.compile(r"^(?P<request_id>.+)-p(?P<shard>\d+)-(?P<host_id>[^-]+)\.img$")
T = TypeVar("T")

CATALOGUE = """
CREATE TABLE IF NOT EXISTS libvirt_parts (
    request_id TEXT NOT NULL, shard INTEGER NOT NULL, host_id TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (request_id, shard, host_id));
"""


def volume_name(part: Part) -> str:
    return f"{part.request_id}-p{part.shard}-{part.host_id}.img"


def domain_xml(part: Part, uuid: str | None = None) -> str:
    """Domain definition: vcpus and memory of the part, its record in the shardplan metadata."""
    record = {k: str(v) for k, v in part.to_record().items() if k != "complete"}
    attributes = " ".join(f'{k}="{v}"' for k, v in record.items())
    uuid_line = f"<uuid>{uuid}</uuid>" if uuid else ""
    # libvirt needs at least one vcpu; a memory-only part gets one, its record keeps vcpu=0.
    return (f"<domain type='test'><name>{part.domain_name}</name>{uuid_line}"
            f"<memory unit='KiB'>{max(part.ram_gib, 0) * KIB_PER_GIB or KIB_PER_GIB // 4}</memory>"
            f"<vcpu>{max(part.vcpu, 1)}</vcpu><os><type>hvm</type></os>"
            f"<metadata><sp:part xmlns:sp='{METADATA_NS}' {attributes}/></metadata></domain>")


class LibvirtExecutor(Executor):
    """Executor through libvirt-python against one connection URI per host."""

    name: ClassVar[str] = "libvirt"
    supports: ClassVar[frozenset[str]] = frozenset({"storage_copy", "persistent_state"})
    connect_attempts: int = 4
    backoff_s: float = 0.05
    """First retry delay; doubles each attempt."""
    pool_name: str = "default-pool"
    opener: Callable[[str], object] | None = None
    """How to open a connection (``libvirt.open`` unless a test injects failures)."""

    def __init__(self, state_path: str | Path, hosts: dict[str, HostSpec] | None = None) -> None:
        if libvirt is None:
            raise ExecutorError("libvirt-python is not installed (apt-get install libvirt-dev pkg-config; pip install libvirt-python)")
        super().__init__(state_path, hosts)
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors arrive as exceptions instead
        missing = sorted(h for h, spec in self.hosts.items() if not spec.libvirt_uri)
        if missing:
            raise ExecutorError(f"host(s) without a libvirt_uri in the hosts table: {', '.join(missing)}")
        self.connections: dict[str, object] = {}
        self.catalogue = connect(self.state_path)
        self.catalogue.executescript(CATALOGUE)
        self.connection_attempts = 0

    # --- connections ------------------------------------------------------------------------
    def _open(self, uri: str) -> object:
        opener = self.opener or libvirt.open
        return opener(uri)

    def connection(self, host_id: str) -> object:
        """The host's connection, opened with retries and exponential back-off."""
        spec = self.hosts.get(host_id)
        if spec is None:
            raise ExecutorError(f"host {host_id!r} is not in the hosts table")
        uri = spec.libvirt_uri
        if uri in self.connections:
            return self.connections[uri]
        delay, last_error = self.backoff_s, None
        for attempt in range(1, self.connect_attempts + 1):
            self.connection_attempts += 1
            try:
                self.connections[uri] = self._open(uri)
                return self.connections[uri]
            except libvirt.libvirtError as exc:
                last_error = exc
                if attempt < self.connect_attempts:
                    time.sleep(delay)
                    delay *= 2
        raise HostUnavailable(f"host {host_id}: cannot connect to {uri} after {self.connect_attempts} attempts: "
                              f"{str(last_error).strip()}")

    def _call(self, host_id: str, what: str, call: Callable[[object], T]) -> T:
        """Run a libvirt call; a broken connection is reopened once, other errors name host and operation."""
        for attempt in (1, 2):
            conn = self.connection(host_id)
            try:
                return call(conn)
            except libvirt.libvirtError as exc:
                code = exc.get_error_code()
                broken = code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC,
                                  libvirt.VIR_ERR_INVALID_CONN)
                if broken and attempt == 1:
                    self.connections.pop(self.hosts[host_id].libvirt_uri, None)
                    continue
                kind = HostUnavailable if broken else ExecutorError
                raise kind(f"host {host_id} ({self.hosts[host_id].libvirt_uri}): {what} failed: {str(exc).strip()}") from exc
        raise AssertionError("unreachable")

    def _pool(self, conn: object) -> object:
        return conn.storagePoolLookupByName(self.pool_name)

    @staticmethod
    def _lookup_domain(conn: object, name: str) -> object | None:
        try:
            return conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def _lookup_volume(self, conn: object, name: str) -> object | None:
        try:
            return self._pool(conn).storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise

    @staticmethod
    def _domain_part(domain: object) -> Part | None:
        try:
            text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
        except libvirt.libvirtError:
            return None
        return Part.from_record(dict(ET.fromstring(text).attrib))

    # --- state ------------------------------------------------------------------------------
    def _catalogued(self) -> dict[tuple[str, int, str], Part]:
        rows = self.catalogue.execute("SELECT record FROM libvirt_parts").fetchall()
        parts = [Part.from_record(json.loads(text)) for (text,) in rows]
        return {p.place: p for p in parts}

    def current_parts(self) -> list[Part]:
        """Domains with shardplan metadata and storage-only parts, per host; complete when the volume exists."""
        found: dict[tuple[str, int, str], Part] = {}
        uris: dict[str, list[str]] = {}
        for host_id, spec in self.hosts.items():
            uris.setdefault(spec.libvirt_uri, []).append(host_id)
        volumes: set[str] = set()
        for uri, host_ids in uris.items():
            conn = self.connection(host_ids[0])
            volumes |= set(self._call(host_ids[0], "listing volumes", lambda c: self._pool(c).listVolumes()))
            for domain in self._call(host_ids[0], "listing domains", lambda c: c.listAllDomains()):
                part = self._domain_part(domain)
                if part is not None and part.host_id in host_ids:
                    found[part.place] = part
        for place, part in self._catalogued().items():
            if place not in found and part.vcpu == 0 and part.ram_gib == 0 and part.host_id in self.hosts:
                found[place] = part
        return sorted((p.with_changes(complete=not p.holds_storage or volume_name(p) in volumes) for p in found.values()),
                      key=lambda p: p.place)

    def domain_shapes(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(host_id, domain name) → (vcpus, memory KiB) as libvirt reports them, for read-back checks."""
        shapes = {}
        for part in self.current_parts():
            if part.vcpu == 0 and part.ram_gib == 0:
                continue
            domain = self._call(part.host_id, "reading a domain", lambda c: c.lookupByName(part.domain_name))
            state, max_kib, _, vcpus, _ = domain.info()
            shapes[(part.host_id, part.domain_name)] = (vcpus, max_kib)
        return shapes

    # --- actions ----------------------------------------------------------------------------
    def apply(self, action: Action) -> None:
        handler = {ActionKind.CREATE: self._create, ActionKind.RESIZE: self._resize,
                   ActionKind.COPY: self._copy, ActionKind.DELETE: self._delete}[action.kind]
        handler(action)

    def _catalogue(self, part: Part) -> None:
        self.catalogue.execute("INSERT OR REPLACE INTO libvirt_parts VALUES (?,?,?,?)",
                               (*part.place, json.dumps(part.to_record())))

    def _define(self, conn: object, part: Part) -> None:
        """Define (or redefine, keeping the uuid) and start the part's domain."""
        domain = self._lookup_domain(conn, part.domain_name)
        if domain is not None:
            current = self._domain_part(domain)
            if current is not None and current.same_shape(part) and current.host_id == part.host_id:
                if not domain.isActive():
                    domain.create()
                return
            uuid = domain.UUIDString()
            if domain.isActive():
                domain.destroy()
            domain = conn.defineXML(domain_xml(part, uuid))
        else:
            domain = conn.defineXML(domain_xml(part))
        domain.create()

    def _create(self, action: Action) -> None:
        part = action.part
        self._catalogue(part)
        if part.vcpu > 0 or part.ram_gib > 0:
            self._call(part.host_id, f"defining {part.domain_name}", lambda c: self._define(c, part))
        if part.holds_storage and part.complete:
            self._call(part.host_id, f"creating volume {volume_name(part)}", lambda c: self._ensure_volume(c, part))

    def _ensure_volume(self, conn: object, part: Part) -> None:
        if self._lookup_volume(conn, volume_name(part)) is None:
            self._pool(conn).createXML(self._volume_xml(part), 0)

    @staticmethod
    def _volume_xml(part: Part) -> str:
        """A thin (sparse) volume: full capacity, nothing allocated until written (pools need not hold every copy's
        whole size up front; the plan already checked the host's storage capacity)."""
        return (f"<volume><name>{volume_name(part)}</name><capacity unit='GiB'>{part.storage_gib}</capacity>"
                "<allocation unit='bytes'>0</allocation></volume>")

    def _resize(self, action: Action) -> None:
        """Reshape in place; the part may also gain or lose its domain or its storage (a role change)."""
        part = action.part
        self._catalogue(part)
        if part.vcpu > 0 or part.ram_gib > 0:
            self._call(part.host_id, f"resizing {part.domain_name}", lambda c: self._define(c, part))
        else:
            self._call(part.host_id, f"removing the domain of {part.label}", lambda c: self._undefine(c, part))
        if part.holds_storage:
            def grow(conn: object) -> None:
                volume = self._lookup_volume(conn, volume_name(part))
                if volume is None:
                    if part.complete:  # a new copy with no data to fill it from (a copy action fills the others)
                        self._pool(conn).createXML(self._volume_xml(part), 0)
                elif volume.info()[1] < part.storage_gib * GIB:
                    volume.resize(part.storage_gib * GIB)
            self._call(part.host_id, f"resizing volume {volume_name(part)}", grow)
        else:
            self._call(part.host_id, f"removing the volume of {part.label}", lambda c: self._drop_volume(c, part))

    def _undefine(self, conn: object, part: Part) -> None:
        """Stop and undefine the part's domain if it is tagged with this host."""
        domain = self._lookup_domain(conn, part.domain_name)
        if domain is not None:
            current = self._domain_part(domain)
            if current is not None and current.host_id == part.host_id:
                if domain.isActive():
                    domain.destroy()
                domain.undefine()

    def _drop_volume(self, conn: object, part: Part) -> None:
        volume = self._lookup_volume(conn, volume_name(part))
        if volume is not None:
            volume.delete(0)

    def _copy(self, action: Action) -> None:
        part = action.part
        dest_conn = self.connection(part.host_id)
        if self._call(part.host_id, "looking up a volume", lambda c: self._lookup_volume(c, volume_name(part))) is not None:
            return
        sources = [p for p in self.current_parts() if p.request_id == part.request_id and p.holds_storage
                   and p.complete and p.place != part.place]
        if not sources:
            raise ExecutorError(f"no complete copy of {part.request_id} to fill {part.label} from")
        source = min(sources, key=lambda p: (p.host_id != action.move_from, p.host_id))
        source_volume = self._call(source.host_id, "reading the source volume",
                                   lambda c: self._pool(c).storageVolLookupByName(volume_name(source)))
        if self.hosts[source.host_id].libvirt_uri == self.hosts[part.host_id].libvirt_uri:
            self._call(part.host_id, f"cloning {volume_name(source)} to {volume_name(part)}",
                       lambda c: self._pool(c).createXMLFrom(self._volume_xml(part), source_volume, 0))
        else:
            self._stream_copy(source, source_volume, part, dest_conn)
        copied = self._call(part.host_id, "verifying the copy", lambda c: self._pool(c).storageVolLookupByName(volume_name(part)))
        if copied.info()[1] < source_volume.info()[1]:
            raise ExecutorError(f"verification of {part.label} failed: capacity {copied.info()[1]} < {source_volume.info()[1]}")

    def _stream_copy(self, source: Part, source_volume: object, part: Part, dest_conn: object) -> None:
        """Across connections: download the source, upload into a new volume, compare checksums."""
        source_conn = self.connection(source.host_id)
        chunks: list[bytes] = []
        try:
            stream = source_conn.newStream(0)
            source_volume.download(stream, 0, 0, 0)
            stream.recvAll(lambda _s, block, _o: chunks.append(block), None)
            stream.finish()
            payload = b"".join(chunks)
            volume = self._pool(dest_conn).createXML(self._volume_xml(part), 0)
            upload = dest_conn.newStream(0)
            volume.upload(upload, 0, len(payload), 0)
            upload.send(payload)
            upload.finish()
        except libvirt.libvirtError as exc:
            raise ExecutorError(f"copying {volume_name(source)} to {part.host_id} failed: {str(exc).strip()}") from exc
        check = hashlib.sha256(payload).hexdigest()
        back: list[bytes] = []
        stream = dest_conn.newStream(0)
        volume.download(stream, 0, 0, 0)
        stream.recvAll(lambda _s, block, _o: back.append(block), None)
        stream.finish()
        if hashlib.sha256(b"".join(back)).hexdigest() != check:
            volume.delete(0)
            raise ExecutorError(f"verification of {part.label} failed: checksum mismatch")

    def _delete(self, action: Action) -> None:
        part = action.part

        def remove(conn: object) -> None:
            self._undefine(conn, part)
            self._drop_volume(conn, part)

        self._call(part.host_id, f"deleting {part.label}", remove)
        self.catalogue.execute("DELETE FROM libvirt_parts WHERE request_id=? AND shard=? AND host_id=?", part.place)

    def close(self) -> None:
        for conn in self.connections.values():
            try:
                conn.close()
            except Exception:  # closing a dead connection is not worth failing over
                pass
        self.connections.clear()
        self.catalogue.close()
