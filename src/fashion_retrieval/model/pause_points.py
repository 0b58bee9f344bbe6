"""Pause points inside a forward pass: a callback run between two layers of the model, in the same thread.

The query engine encodes a catalogue item (an image forward: ~0.5 s for a BLIP-base-sized model on 2 CPU cores)
on the one thread that runs the model. A shopper's search that arrives meanwhile would wait for the whole forward;
with pause points it waits for one layer (a few ms to tens of ms): the engine's callback runs the waiting searches
right there, through the same modules (the model is stateless at inference), and the item's forward then goes on
where it stopped. The points are forward pre-hooks on the model's Linear layers (every transformer block has
several, in every family), installed only for the duration of the block that asks for them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from torch import nn

log = logging.getLogger(__name__)


@contextlib.contextmanager
def pause_points(model: nn.Module, callback: Callable[[], None]) -> Iterator[int]:
    """While the block runs, ``callback()`` is called before every Linear layer of ``model`` runs (never while a
    callback is running: the work it starts passes the same layers). Yields the number of points. The callback's
    errors are logged, never raised into the paused forward."""
    running = False

    def pause(_module: nn.Module, _args: tuple) -> None:
        nonlocal running
        if running:
            return
        running = True
        try:
            callback()
        except Exception:  # noqa: BLE001 - the paused forward must finish whatever the callback met
            log.exception("the work run at a pause point failed")
        finally:
            running = False

    handles = [module.register_forward_pre_hook(pause) for module in model.modules() if isinstance(module, nn.Linear)]
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


__all__ = ["pause_points"]
