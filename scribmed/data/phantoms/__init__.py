"""Synthetic cardiac and abdominal MRI phantoms with labels and realistic scribbles.

The embedded default dataset: no download, seeded, a 10-patient cardiac set in a few seconds. It
exercises the whole pipeline (readers, training, SAM prompting, metrics) on data that looks like
the real thing at the level that matters for those code paths.

Cardiac (short-axis cine, ACDC-like; or LGE, MSCMR-like): per patient a stack of slices from base
to apex with an LV blood pool, a myocardial ring of varying thickness, an RV crescent beside it
(absent in apical slices), all varying per patient (size, position, eccentricity, orientation,
taper) and between end-diastole (ED, ``frame01``) and end-systole (ES, ``frameNN``: smaller cavity,
thicker wall). Around it: body ellipse with a fat rim, lungs, liver, aorta and random blobs.
Abdominal (CHAOS-like axial MR): liver (image left = patient right), right/left kidneys, spleen,
spine, fat, bowel blobs, in T1 and T2 contrast.

Image formation: shapes are rasterised on a supersampled grid, blurred and block-averaged
(partial-volume effect), multiplied by a smooth bias field, given Rician noise, then clipped at
the 99th percentile and scaled to [0, 1] (as in the WSL4MIS ACDC h5 files). Labels are evaluated at
the pixel centres of the final grid. Arrays are ``(slices, H, W)``, spacing ``(dz, dy, dx)`` mm.

Patient ``i`` of a given ``seed`` is the same whatever ``n_patients`` is (each patient has its own
``numpy`` generator seeded by ``(seed, i)``).

Modules: :mod:`~scribmed.data.phantoms.cardiac` and :mod:`~scribmed.data.phantoms.abdominal`
(the generators), :mod:`~scribmed.data.phantoms.shapes` (rasterised shapes),
:mod:`~scribmed.data.phantoms.imaging` (partial volume, bias field, noise),
:mod:`~scribmed.data.phantoms.patient_sampling` (per-patient seeds and draws),
:mod:`~scribmed.data.phantoms.phantom_case` (:class:`PhantomCase`),
:mod:`~scribmed.data.phantoms.kinds` (kinds, their layouts, dispatch) and
:mod:`~scribmed.data.phantoms.writer` (datasets on disk). The package exports their public names.
"""

from scribmed.data.phantoms.abdominal import generate_abdominal
from scribmed.data.phantoms.cardiac import generate_cardiac
from scribmed.data.phantoms.kinds import KINDS, LAYOUTS_BY_KIND, phantom_cases
from scribmed.data.phantoms.nuclei import make_nuclei_image, write_nuclei_dataset
from scribmed.data.phantoms.phantom_case import PhantomCase
from scribmed.data.phantoms.writer import MARKER as MARKER
from scribmed.data.phantoms.writer import mscmr_subsets, write_phantom_dataset

__all__ = [
    "PhantomCase",
    "generate_cardiac",
    "generate_abdominal",
    "make_nuclei_image",
    "write_nuclei_dataset",
    "phantom_cases",
    "write_phantom_dataset",
    "mscmr_subsets",
    "KINDS",
    "LAYOUTS_BY_KIND",
]
