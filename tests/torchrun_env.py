"""torchrun's environment for the tests that run a process group in the test's own process.

Import with ``from torchrun_env import free_port, group_of_one`` (``tests/`` is on ``sys.path``
through its ``conftest.py``).
"""

from __future__ import annotations

import socket

__all__ = ["free_port", "group_of_one"]


def free_port() -> int:
    """A TCP port free on the loopback interface now (for ``MASTER_PORT``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_of_one() -> dict[str, str]:
    """The variables ``torchrun --nproc_per_node 1`` gives its one process: rank 0 of a group of one."""
    return {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port())}
