"""The HTTP API's routes, one ``APIRouter`` per concern; ``serve/app.py:create_app`` includes them.

- ``search``: text, image, hybrid and composed searches (``/api/search/...``)
- ``catalog``: items by id, facets, item images (``/api/items/...``, ``/api/facets``, ``/images/...``)
- ``items``: catalogue writes behind the admin key (add, replace, patch, delete, batch imports)
- ``system``: health, and Prometheus ``/metrics`` (its own router: added only when metrics are on)
- ``page``: the web page at ``/`` (its static files are mounted by ``create_app``)

Every route is ``async`` and awaits work done elsewhere (the engine's model worker, its store pool, a thread for
decoding uploads): nothing on the event loop waits on a lock, a model or a store, so ``/api/health`` answers in
milliseconds while every worker is busy. Routes take what they need from ``request.app.state`` (through the
dependencies in ``serve/dependencies.py``), never from a closure, so a router is a plain module-level value.
"""

from __future__ import annotations

__all__ = ["catalog", "items", "page", "search", "system"]
