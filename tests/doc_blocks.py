"""The bash blocks of a docs page, and the commands a block runs as bash expands them (test helper)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Sequence


def bash_blocks(text: str) -> list[str]:
    """The bodies of the page's ```bash blocks, in page order."""
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def recorded_calls(script: str, names: Sequence[str], env: dict, cwd: Path) -> list[list[str]]:
    """``[name, arg, ...]`` of every call of ``names`` in ``script``, as bash expands it (variables,
    loops, quotes, continuation lines): each name is a shell function that prints its arguments,
    NUL-separated after a \\x01 marker, instead of running."""
    recorder = "".join(f"{n}() {{ printf '\\001\\0{n}\\0'; printf '%s\\0' \"$@\"; }}\n" for n in names)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", recorder + script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{script}\n{done.stderr}"
    calls: list[list[str]] = []
    for token in done.stdout.split("\0")[:-1]:
        if token == "\x01":
            calls.append([])
        else:
            calls[-1].append(token)
    return calls
