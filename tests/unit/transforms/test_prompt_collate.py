"""collate_prompts: samples with ragged SAM prompt dicts through a DataLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from scribmed.data.case import CARDIAC
from scribmed.transforms import ScribblePromptsd, collate_prompts, is_prompt_dict


def sample(classes):
    scribble = np.full((32, 32), CARDIAC.ignore_index, dtype=np.int64)
    for i, k in enumerate(classes):
        scribble[4 + 6 * i: 6 + 6 * i, 4:28] = k
    return {"image": np.zeros((1, 32, 32), np.float32), "scribble": scribble}


def test_prompt_dicts_stay_per_sample_and_the_rest_is_stacked():
    data = Dataset([sample([3]), sample([1, 2, 3])], transform=ScribblePromptsd(keys="scribble", class_map=CARDIAC))
    with pytest.raises(Exception):  # what collate_prompts is for: default collation cannot stack them
        next(iter(DataLoader(data, batch_size=2)))
    batch = next(iter(DataLoader(data, batch_size=2, collate_fn=collate_prompts)))
    assert batch["image"].shape == (2, 1, 32, 32) and isinstance(batch["scribble"], torch.Tensor)
    assert [p["classes"] for p in batch["prompts"]] == [[3], [1, 2, 3]]
    assert all(is_prompt_dict(p) for p in batch["prompts"])
    assert batch["prompts"][1]["point_coords"].shape[0] == 3
    explicit = collate_prompts([data[0], data[1]], keys=["prompts"])
    np.testing.assert_array_equal(explicit["prompts"][0]["point_coords"], batch["prompts"][0]["point_coords"])
    with pytest.raises(ValueError, match="no 'prompts'"):
        collate_prompts([data[0], {"image": data[1]["image"]}], keys=["prompts"])
