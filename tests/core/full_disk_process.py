"""A geofence whose state directory is a small tmpfs that its audit log fills up.

Run as root inside a mount namespace of its own (``unshare --mount --propagation private``): mounts a
4 MiB tmpfs on STATE_DIR, takes most of it with a ballast file, then admits and lets go participants
(each admission is an audit row) until the audit log can no longer write; then changes a policy.
Usage: ``full_disk_process.py STATE_DIR DATABASE RESERVE_BYTES``; prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sfu_geofence import Geofence, RoomPolicy, StorageError
from sfu_geofence.server.state import StateConfig


def main(state_dir: str, database: str, reserve: int) -> dict[str, object]:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", state_dir], check=True)
    state = StateConfig(Path(state_dir), audit_reserve=reserve)
    fence = Geofence(
        lambda request: None, database=database, policies=state.open_policies(), audit=state.open_audit()
    )
    with open(os.path.join(state_dir, "ballast"), "wb") as ballast:
        ballast.write(bytes(3 * 1024 * 1024))
    admitted = 0
    while fence.audit_failures == 0 and admitted < 100_000:
        fence.admit("room", f"p{admitted}", "127.1.0.1")
        fence.leave("room", f"p{admitted}")
        admitted += 1
    try:
        version: int | str = fence.set_policy("room", RoomPolicy.deny("CN"))
    except StorageError as exc:
        version = f"not stored: {exc}"
    free = fence.audit.free_bytes()
    fence.close()
    return {"admitted": admitted, "audit_failures": fence.audit_failures, "policy": version, "free": free}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))), flush=True)
