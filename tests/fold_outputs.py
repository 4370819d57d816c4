"""What a finished fold produced, for comparing two runs of the same fold (executors, resumes).

Import with ``from fold_outputs import fold_outputs`` (``tests/`` is on ``sys.path`` through its
``conftest.py``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

__all__ = ["fold_outputs"]


def fold_outputs(run: Path, k: int) -> dict[str, object]:
    """Fold ``k`` of ``run``: its per-case CSV (bytes), evaluation summary, a digest of the chosen
    checkpoint's weights and the best iteration; equal for two runs that trained the same way."""
    fold = Path(run) / f"fold_{k}"
    record = json.loads((fold / "fold.json").read_text())
    weights = torch.load(fold / record["checkpoint"], weights_only=True)["network"]
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].cpu().numpy().tobytes())
    return {"per_case": (fold / "evaluation" / "per_case.csv").read_bytes(),
            "summary": json.loads((fold / "evaluation" / "summary.json").read_text()),
            "weights": digest.hexdigest(), "best_iteration": record.get("best_iteration")}
