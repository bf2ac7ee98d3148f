"""The event loop our HTTP clients and servers run on.

uvloop when installed (it comes with ray[serve]'s uvicorn[standard]): its loop costs
less CPU per request than asyncio's, which decides how many requests a small machine
keeps in flight. Plain asyncio otherwise, so nothing depends on it.
"""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
