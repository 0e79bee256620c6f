"""Address -> country, from a MaxMind DB (``.mmdb``) file read by the maxminddb C extension.

Two record shapes are understood:

* GeoIP2 / GeoLite2 Country and City: ``country.iso_code``, falling back to
  ``registered_country.iso_code`` when ``country`` is absent (anonymous proxies, anycast);
* DB-IP style: ``country_code``.

:class:`Location` says which field decided. An address that the database does not contain is *unknown*
(``country is None``), never an error. Text that is not an IP address raises
:class:`~.errors.InvalidAddress`; a missing or corrupt file raises :class:`~.errors.DatabaseError` when
it is opened, so a server fails at start-up rather than at the first participant; so does a sound file
of another kind (e.g. GeoLite2-ASN), which would place nobody.

Dual-stack sockets report IPv4 peers as ``::ffff:a.b.c.d``, which databases other than MaxMind's do
not map: such addresses are looked up as the IPv4 address they carry.

The embedded default is DB-IP "IP to Country Lite" (CC BY 4.0), shipped as package data so a fresh
install works offline; show :data:`DBIP_ATTRIBUTION` wherever its results are shown.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import maxminddb
from maxminddb.errors import InvalidDatabaseError

from .addresses import parse_address
from .countries import all_codes, is_country_code
from .errors import DatabaseError, InvalidAddress

logger = logging.getLogger(__name__)

#: Which field of a record gave the country.
Source = Literal["country", "registered_country", "country_code"]

#: Attribution required by the embedded database's licence (CC BY 4.0).
DBIP_ATTRIBUTION = "IP Geolocation by DB-IP (https://db-ip.com)"

#: A database older than this is reported as stale.
STALE_AFTER = timedelta(days=30)

EMBEDDED_NAME = "dbip-country-lite.mmdb"

# Looked up once when a file is opened: a search tree or data section that is corrupt on the way to
# these addresses is found at start-up, not at the first participant.
_PROBES = ("1.1.1.1", "8.8.8.8", "114.114.114.114", "81.2.69.160", "127.0.0.1", "255.255.255.255")
_PROBES_V6 = ("2001:4860:4860::8888", "2001:2e0::1", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")

#: Words of a file's ``database_type`` that say it places addresses in countries: GeoIP2/GeoLite2
#: Country, City and Enterprise, DB-IP ``country``/``city``/``location`` (the embedded file says
#: ``country ipvAll``). ASN, ISP, Domain, Connection-Type and Anonymous-IP files place nobody.
_COUNTRY_TYPE_WORDS = frozenset({"country", "city", "enterprise", "location"})
#: Record fields a country can come from (see :data:`Source`).
_COUNTRY_FIELDS = frozenset({"country", "registered_country", "country_code"})


def embedded_database_path() -> Path:
    """Path of the embedded DB-IP Country Lite file inside the installed package."""
    return Path(str(resources.files("sfu_geofence.core").joinpath("data", EMBEDDED_NAME)))


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    """Which database build answered: recorded with every decision so it can be explained later."""

    path: str
    """File the database was read from."""
    database_type: str
    """The file's own ``database_type`` metadata, e.g. ``GeoIP2-Country`` or ``country``."""
    built: datetime
    """Build time from the file's metadata (``build_epoch``), UTC."""
    ip_version: int
    """4 for an IPv4-only tree, 6 for one that also holds IPv6."""
    embedded: bool
    """Whether this is the DB-IP Country Lite file shipped with the package."""

    @property
    def label(self) -> str:
        """Short name of the build, e.g. ``DB-IP Country Lite 2026-06-01``."""
        name = "DB-IP Country Lite" if self.embedded else self.database_type
        return f"{name} {self.built:%Y-%m-%d}"

    @property
    def attribution(self) -> str | None:
        """Text that must accompany results from this database, if its licence asks for one."""
        return DBIP_ATTRIBUTION if self.embedded else None

    def age(self, now: datetime | None = None) -> timedelta:
        return (now or datetime.now(UTC)) - self.built

    def stale(self, now: datetime | None = None) -> bool:
        """Older than :data:`STALE_AFTER`: countries move between allocations, so say so."""
        return self.age(now) > STALE_AFTER

    def staleness_warning(self, now: datetime | None = None) -> str | None:
        """A sentence for operators when the database is stale, else None."""
        if not self.stale(now):
            return None
        return (
            f"geolocation database {self.label} is {self.age(now).days} days old "
            f"(more than {STALE_AFTER.days}): update it"
        )


@dataclass(frozen=True, slots=True)
class Location:
    """Where the database puts an address. Interned: one instance per country and field per build."""

    country: str | None
    """ISO 3166-1 alpha-2 code, or None when the address is unknown to the database."""
    source: Source | None
    """Which record field gave ``country``; None when unknown."""
    database: DatabaseInfo
    """The build that answered."""
    key: int = field(default=-1, compare=False, repr=False)
    """Process-unique number of this interned instance: what decision caches are keyed by (an int
    hashes in C, a dataclass in Python)."""


_keys = itertools.count()

_inet_pton = socket.inet_pton
#: A plain int: the IntEnum ``socket.AF_INET`` costs a conversion per call on the hot path.
_AF_INET = int(socket.AF_INET)


def normalise_address(address: str) -> str:
    """Canonical text of an IP address (:func:`~.addresses.parse_address`: ``::ffff:a.b.c.d`` as
    ``a.b.c.d``, a zone id dropped).

    Raises InvalidAddress for anything else. This is the careful (slower) path; the :class:`Locator`
    hot path reaches the same answer for socket-formatted addresses without it.
    """
    if not isinstance(address, str):
        raise InvalidAddress(f"an address must be a string, not {type(address).__name__}")
    try:
        return str(parse_address(address))
    except ValueError:
        raise InvalidAddress(f"{address!r} is not an IP address") from None


class _Build:
    """One opened database file and the Location values interned for it (swapped whole on reload)."""

    __slots__ = ("by_code", "by_country_code", "get", "info", "reader", "unknown")

    def __init__(self, reader: Any, info: DatabaseInfo) -> None:
        self.reader = reader
        self.get = reader.get
        self.info = info
        self.unknown = Location(None, None, info, next(_keys))
        self.by_code: dict[tuple[Any, str], Location] = {}
        # DB-IP records: one dictionary lookup from the record's code to its Location.
        self.by_country_code = {code: self.location(code, "country_code") for code in all_codes()}

    def location(self, code: Any, source: Source) -> Location:
        key = (code, source)
        found = self.by_code.get(key)
        if found is None:
            if isinstance(code, str) and is_country_code(code.upper()):
                found = Location(code.upper(), source, self.info, next(_keys))
            else:
                logger.debug("database %s: %r in %s is not a country code", self.info.label, code, source)
                found = self.unknown
            self.by_code[key] = found
        return found

    def from_record(self, record: Any) -> Location:
        try:
            code = record.get("country_code")
            if code is not None:
                return self.location(code, "country_code")
            country = record.get("country")
            if country is not None and country.get("iso_code") is not None:
                return self.location(country["iso_code"], "country")
            registered = record.get("registered_country")
            if registered is not None and registered.get("iso_code") is not None:
                return self.location(registered["iso_code"], "registered_country")
        except AttributeError:  # a record (or field) that is not a map: not a country database
            pass
        return self.unknown


def _open(path: Path, *, embedded: bool) -> _Build:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DatabaseError(f"geolocation database {str(path)!r} does not exist") from None
    except OSError as exc:
        raise DatabaseError(f"geolocation database {str(path)!r} cannot be read: {exc}") from None
    if not stat.S_ISREG(mode):  # a FIFO would block open() (and the event loop) until a writer came
        raise DatabaseError(f"geolocation database {str(path)!r} is not a regular file")
    try:
        reader = _open_private_copy(path)
    except FileNotFoundError:
        raise DatabaseError(f"geolocation database {str(path)!r} does not exist") from None
    except (OSError, InvalidDatabaseError, ValueError, TypeError) as exc:
        raise DatabaseError(f"geolocation database {str(path)!r} cannot be read: {exc}") from None
    try:
        meta = reader.metadata()
        info = DatabaseInfo(
            path=str(path),
            database_type=str(meta.database_type),
            built=datetime.fromtimestamp(int(meta.build_epoch), UTC),
            ip_version=int(meta.ip_version),
            embedded=embedded,
        )
        records = [reader.get(probe) for probe in _PROBES + (_PROBES_V6 if info.ip_version == 6 else ())]
    except (InvalidDatabaseError, ValueError, OverflowError, OSError) as exc:
        reader.close()
        raise DatabaseError(f"geolocation database {str(path)!r} is corrupt: {exc}") from None
    try:
        _check_country_database(path, info.database_type, [r for r in records if r is not None])
    except DatabaseError:
        reader.close()
        raise
    return _Build(reader, info)


def _open_private_copy(path: Path) -> Any:
    """Open a copy of ``path`` in anonymous memory (a memfd), not the file itself.

    maxminddb maps the file it opens. A file rewritten in place under a mapping (not what
    ``geoipupdate`` does, but what ``cp`` or an editor does) would have lookups read torn data, and
    one truncated under it would kill the whole process with SIGBUS at the next lookup. A private
    copy costs one copy of the file at each (re)load (4 ms for the 8 MB embedded file) and its size
    in memory, which a mapping of the file took in page cache anyway.
    """
    if not hasattr(os, "memfd_create"):  # not Linux: map the file itself
        return maxminddb.open_database(str(path))
    with open(path, "rb") as source:
        copy = os.memfd_create("sfu-geofence-db", os.MFD_CLOEXEC)
        try:
            size, done = os.fstat(source.fileno()).st_size, 0
            while done < size:
                sent = os.sendfile(copy, source.fileno(), done, size - done)
                if sent == 0:  # shrunk while being copied: what is there is checked like any file
                    break
                done += sent
            name = f"/proc/self/fd/{copy}"
            try:
                return maxminddb.open_database(name)
            except InvalidDatabaseError as exc:  # say which file, not which descriptor
                raise InvalidDatabaseError(str(exc).replace(name, str(path))) from None
        finally:
            os.close(copy)  # the reader's mapping keeps the memory alive


def _check_country_database(path: Path, database_type: str, records: list[Any]) -> None:
    """Refuse a sound file of another kind (ASN, ISP, anonymous IP...): it places nobody, so every
    participant would be *unknown*, admitted under a deny list and ejected under an allow list."""
    words = set(re.split(r"[^a-z]+", database_type.lower()))
    if not words & _COUNTRY_TYPE_WORDS:
        raise DatabaseError(
            f"geolocation database {str(path)!r} is a {database_type!r} database, not a country one "
            "(expected e.g. GeoIP2/GeoLite2 Country or City, or DB-IP country)"
        )
    if records and not any(isinstance(r, dict) and _COUNTRY_FIELDS & r.keys() for r in records):
        raise DatabaseError(
            f"geolocation database {str(path)!r} ({database_type!r}) has records without any of "
            f"{', '.join(sorted(_COUNTRY_FIELDS))}: not a country database"
        )


class Locator:
    """Looks addresses up in one database at a time; :meth:`reload` swaps in another atomically.

    Use from one thread (the host's event loop). A lookup sees either the old or the new build,
    never a mixture: the swap is a single attribute assignment.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        """Open ``path``, or the embedded DB-IP Country Lite file when None. Raises DatabaseError."""
        self._build = self._load(embedded_database_path() if path is None else Path(path))
        self._closed = False

    @staticmethod
    def _load(path: Path) -> _Build:
        embedded = embedded_database_path()
        return _open(path, embedded=path.exists() and embedded.exists() and path.samefile(embedded))

    @property
    def database(self) -> DatabaseInfo:
        """The build now answering lookups."""
        return self._build.info

    @property
    def reader(self) -> Any:
        """The ``maxminddb`` reader now answering: its raw ``get`` is the baseline a benchmark compares
        lookups against (the same bytes in memory, so that neither has the CPU cache to itself)."""
        return self._build.reader

    @property
    def unknown(self) -> Location:
        """The Location of every address the current build does not place."""
        return self._build.unknown

    def locate(self, address: str) -> Location:
        """Where the database puts ``address`` (canonical IPv4/IPv6 text, as sockets report it).

        Unknown addresses give a Location whose country is None. Raises InvalidAddress for text
        that is not an IP address, DatabaseError when the data for this address is corrupt.
        """
        build = self._build
        if ":" in address:
            if address[:7].lower() == "::ffff:" and "." in address:
                address = address[7:]  # dual-stack sockets' IPv4 peers
                if address.count(".") != 3 or ".0" in address or address[0] == "0":
                    address = normalise_address(address)
            elif address[:1] == "0":
                address = normalise_address(address)  # 0:0:0:0:0:ffff:a.b.c.d and other long forms
        else:
            # maxminddb also reads inet_aton forms ("1.2.3", "010.1.1.1", "0x8.8.8.8") that name
            # another address than they seem to. inet_pton reads only four decimal octets without
            # leading zeros, in C: one call, cheaper than three string scans, and "1.0.0.1" stays fast.
            try:
                _inet_pton(_AF_INET, address)
            except (OSError, ValueError):  # not that form (ValueError: a NUL character)
                address = normalise_address(address)
        try:
            record = build.get(address)
        except InvalidDatabaseError as exc:
            # No address in the message: it is logged above DEBUG (the audit row has the address).
            logger.debug("corrupt database record for %s", address)
            raise DatabaseError(f"{build.info.label}: corrupt data in the database: {exc}") from None
        except (ValueError, TypeError):
            return self._not_found(build, address)
        if record is None:
            return build.unknown
        try:
            location = build.by_country_code.get(record.get("country_code"))
        except (AttributeError, TypeError):  # not a map, or an unhashable code: not a country database
            return build.unknown
        return location if location is not None else build.from_record(record)

    def _not_found(self, build: _Build, address: str) -> Location:
        normalised = normalise_address(address)  # raises InvalidAddress for non-addresses
        if ":" in normalised and build.info.ip_version == 4:
            return build.unknown  # an IPv6 address cannot be in an IPv4-only database
        raise InvalidAddress(f"{address!r} cannot be looked up in {build.info.label}")

    def reload(self, path: str | Path | None = None) -> DatabaseInfo:
        """Open ``path`` (None: the current file again, e.g. after geoipupdate replaced it) and, only
        if it is sound, answer from it.

        A missing or corrupt file raises DatabaseError and the current build keeps answering.
        """
        build = self._load(Path(self._build.info.path if path is None else path))
        old, self._build = self._build, build
        old.reader.close()
        logger.info("geolocation database now %s (%s)", build.info.label, build.info.path)
        return build.info

    def close(self) -> None:
        """Release the file; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._build.reader.close()
