"""The registrar: phones registering to us (RFC 3261 10.3). `service` is the location service
(bindings, their bounds and expiry, REGISTER answered); `sqlite` and `postgres` are the stores the
bindings are written through to (the state folder's SQLite file by default, a PostgreSQL shared by
several nodes with --location-dsn). Lines registering *to providers* are runtime/lines."""

from .service import (
    DEFAULT_EXPIRES,
    MAX_CONTACT_BYTES,
    MAX_CONTACTS,
    MAX_EXPIRES,
    MAX_PATH,
    MAX_PATH_BYTES,
    MAX_USER_AGENT,
    MIN_EXPIRES,
    Binding,
    LocationStore,
    MemoryLocationStore,
    Registrar,
)

__all__ = [
    "Binding",
    "DEFAULT_EXPIRES",
    "LocationStore",
    "MAX_CONTACTS",
    "MAX_CONTACT_BYTES",
    "MAX_EXPIRES",
    "MAX_PATH",
    "MAX_PATH_BYTES",
    "MAX_USER_AGENT",
    "MIN_EXPIRES",
    "MemoryLocationStore",
    "Registrar",
]
