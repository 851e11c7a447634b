"""`kubegate bench revocation`: from one published revocation to every edge and relay cutting.

Filled in with the relay: see `run`.
"""

from __future__ import annotations

import argparse
from typing import Any


async def run(args: argparse.Namespace) -> dict[str, Any]:
    raise NotImplementedError("revocation benchmark lands with the relay")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("revocation", help="revocation latency across M edges and N relays")
    p.add_argument("--relays", type=int, default=200)
    p.add_argument("--edges", type=int, default=4)
