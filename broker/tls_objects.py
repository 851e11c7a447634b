"""TLS objects whose `read` and `write` are OpenSSL's own, with no Python frame in between.

The event loop's TLS layer (uvloop's or asyncio's) decrypts what a socket delivers one TLS
record at a time, calling `SSLObject.read` for each: 64 calls per MB of a port-forward, each
through `ssl.SSLObject`'s Python wrapper, which only passes its arguments on to the C object.
Binding the C methods on the instance skips the wrapper (an edge spent about 3% less CPU per
port-forwarded MB). Install with `context.sslobject_class = FastSSLObject` (or a subclass).
"""

from __future__ import annotations

import ssl
from typing import Any


class FastSSLObject(ssl.SSLObject):
    """`ssl.SSLObject` whose `read` and `write` are the C object's bound methods."""

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> FastSSLObject:
        obj: FastSSLObject = super()._create(*args, **kwargs)  # type: ignore[misc]
        # Same signatures as the wrappers: read(len[, buffer]) and write(data).
        obj.read = obj._sslobj.read  # type: ignore[attr-defined,method-assign]
        obj.write = obj._sslobj.write  # type: ignore[attr-defined,method-assign]
        return obj
