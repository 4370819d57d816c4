"""Clipped Voronoi cells of point labels: the instance prior SAM's box prompts and SeSAM's regions use."""

from __future__ import annotations

import numpy as np
import pytest

from scribmed.transforms.point_cells import point_cells


def test_two_points_split_the_image_and_are_clipped_by_their_distance():
    cells = point_cells({3: [[10, 10]], 7: [[30, 10]]}, (21, 41), max_radius=60, min_radius=2)
    assert cells.ids.tolist() == [3, 7]
    np.testing.assert_allclose(cells.radius, [20.0, 20.0])
    a, b = cells.regions
    assert not (a & b).any()
    assert a[10, 10] and b[10, 30] and not a[10, 25] and b[10, 25]
    # cell 3: x from 0 (clipped by the image) to 20 (the bisector at x = 20 is shared: nearest point ties)
    x0, y0, x1, y1 = cells.boxes[0]
    assert (x0, y0) == (0, 0) and 19 <= x1 <= 20 and y1 == 20
    # every pixel of a cell lies within its radius
    yy, xx = np.nonzero(a)
    assert np.hypot(xx - 10, yy - 10).max() <= 20.0


def test_lone_point_takes_max_radius_and_multi_point_instances_unite_cells():
    lone = point_cells({1: [[50, 50]]}, (101, 101), max_radius=8)
    assert lone.radius[0] == 8 and tuple(lone.boxes[0]) == (42, 42, 58, 58)
    multi = point_cells({1: [[5, 5], [9, 5]], 2: [[30, 5]]}, (11, 40), min_radius=1)
    assert multi.regions[0][5, 5] and multi.regions[0][5, 9]
    assert multi.radius[0] == pytest.approx(21.0)  # from (9, 5) to (30, 5)


def test_min_radius_and_errors():
    close = point_cells({1: [[5, 5]], 2: [[6, 5]]}, (12, 12), min_radius=4)
    assert close.radius.tolist() == [4.0, 4.0]
    empty = point_cells({}, (5, 5))
    assert empty.regions.shape == (0, 5, 5) and empty.boxes.shape == (0, 4)
    with pytest.raises(ValueError, match="radius"):
        point_cells({1: [[1, 1]]}, (4, 4), max_radius=1, min_radius=2)
