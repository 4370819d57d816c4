"""ScribbleBench-style scribbles: interior curves and boundary arcs inside each class, some slices left out."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from scribmed.data.case import CARDIAC
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.data.layouts import open_dataset
from scribmed.data.scribble_synthesis import SCRIBBLE_STYLES, named_style, synthesize_scribbles
from scribmed.data.scribblebench_synthesis import ScribbleBenchStyle


@pytest.fixture(scope="module")
def label(tmp_path_factory) -> np.ndarray:
    root = write_phantom_dataset("cardiac", "acdc-h5", tmp_path_factory.mktemp("sb") / "a", n_patients=1, seed=2,
                                 size=(96, 80), slices=(6, 6))
    return np.asarray(open_dataset("acdc-h5", root).cases[0].label)


def test_strokes_stay_inside_their_class_and_are_sparse(label):
    s = synthesize_scribbles(label, CARDIAC, seed=0, style=ScribbleBenchStyle(slice_skip_prob=0.0))
    assert s.shape == label.shape
    for k in range(4):
        assert np.all(label[s == k] == k)
    assert 0.001 < (s != CARDIAC.ignore_index).mean() < 0.08
    for z in range(label.shape[0]):  # without skipping, every sizeable class region gets a stroke
        for k in range(1, 4):
            if (label[z] == k).sum() >= 40:
                assert (s[z] == k).any(), (z, k)


def test_interior_curve_and_boundary_arc_both_appear(label):
    always = ScribbleBenchStyle(slice_skip_prob=0.0, boundary_prob=1.0, control_points=(4, 4))
    s = synthesize_scribbles(label, CARDIAC, seed=1, style=always, background=False)
    z = int(np.argmax([(label[i] == 3).sum() for i in range(label.shape[0])]))
    lv = label[z] == 3
    edge = lv & ~ndi.binary_erosion(lv)
    stroke = s[z] == 3
    assert (stroke & edge).any()  # part of the outline
    assert (stroke & ndi.binary_erosion(lv, iterations=2)).any()  # and a curve well inside


def test_skipped_slices_get_no_scribble_at_all(label):
    s = synthesize_scribbles(label, CARDIAC, seed=0, style=ScribbleBenchStyle(slice_skip_prob=1.0))
    assert np.all(s == CARDIAC.ignore_index)
    some = synthesize_scribbles(label, CARDIAC, seed=3, style=ScribbleBenchStyle(slice_skip_prob=0.5))
    empty = [z for z in range(label.shape[0]) if np.all(some[z] == CARDIAC.ignore_index)]
    assert 0 < len(empty) < label.shape[0]


def test_same_seed_same_scribbles_and_named_styles(label):
    style = named_style("scribblebench")
    a = synthesize_scribbles(label, CARDIAC, seed=5, style=style)
    b = synthesize_scribbles(label, CARDIAC, seed=5, style=style)
    np.testing.assert_array_equal(a, b)
    assert set(SCRIBBLE_STYLES) == {"acdc", "abdominal", "scribblebench"}
    with pytest.raises(ValueError, match="unknown scribble style 'thick'.*acdc, abdominal, scribblebench"):
        named_style("thick")
