"""A host that goes silent, as in a real node crash (power off, kernel panic, `docker kill`).

`pg_ctl -m immediate` leaves the node's address up and refusing connections at once; a dead
machine answers nothing, so every connection to it waits for its connect timeout and every
open one for TCP's retransmissions. On loopback the same is one nftables table that drops
every packet to or from one 127.x address (each node of a `PgCluster(hosts=loopback_hosts(n))`
has its own): packets from the address are dropped too, so the RST/FIN of the processes killed
afterwards never reach their peers, as after a power cut.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

NFT = "nft"


@contextmanager
def silent_host(address: str) -> Iterator[None]:
    """Drop every packet to or from `address` (127.0.0.0/8, never 127.0.0.1) while inside;
    the table goes at exit, on failure too."""
    ip = ipaddress.ip_address(address)
    if ip.version != 4 or not ip.is_loopback or address == "127.0.0.1":
        raise ValueError(f"silent_host needs a loopback address other than 127.0.0.1: {address}")
    table = f"agrajag_silent_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    rules = (
        f"table inet {table} {{\n"
        "  chain input {\n"
        "    type filter hook input priority -300; policy accept;\n"
        f"    ip daddr {address} drop\n"
        f"    ip saddr {address} drop\n"
        "  }\n"
        "}\n"
    )
    subprocess.run([NFT, "-f", "-"], input=rules, text=True, check=True, timeout=10)
    try:
        yield
    finally:
        subprocess.run([NFT, "delete", "table", "inet", table], check=True, timeout=10)
