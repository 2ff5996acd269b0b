"""A faithful emulator of the hosted Flux APIs (AceData, an OpenAI-style relay, Black Forest Labs).

One aiohttp server on loopback serves all three vendor families, records every request, runs tasks on
a clock that tests can ``advance()``, and injects failures on request. See FLUX_API.md for the
behaviour it follows and ``server.py`` for the routes.
"""

from tests.fluxemu.records import CallbackDelivery, EmuTask, Outcome, RecordedRequest
from tests.fluxemu.server import FluxEmulator

__all__ = ["CallbackDelivery", "EmuTask", "FluxEmulator", "Outcome", "RecordedRequest"]
