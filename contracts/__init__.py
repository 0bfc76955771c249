"""Shapes that cross a process boundary. Importing this package registers every event type."""

from contracts import auth, catalog, ordering, resale  # noqa: F401  (registration)
