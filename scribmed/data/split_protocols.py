"""The split protocols scribmed ships: ACDC, MSCMR, CHAOS MR and DSB2018, as the papers define them.

Each function returns the :class:`~scribmed.data.split_types.Split` its committed file in
``data_splits/`` holds (:data:`BUILTIN_SPLITS`, :func:`write_builtin_splits` regenerates them);
the patient lists are the public datasets' own. The split types are in
:mod:`scribmed.data.split_types`, the file format, reading and writing in
:mod:`scribmed.data.split_files`, carving and checking in :mod:`scribmed.data.splits`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from scribmed.data.split_files import SPLITS_DIR, save_split
from scribmed.data.split_types import Fold, Split, ValidationRule, _check_folds
from scribmed.data.splits import _make_split, make_kfold_split

ACDC_PATIENTS = [f"patient{i:03d}" for i in range(1, 101)]
MSCMR_TRAIN = [2, 4, 6, 7, 9, 13, 14, 15, 18, 19, 20, 21, 22, 24, 25, 26, 27, 31, 32, 34, 37, 39, 42, 44, 45]
MSCMR_VAL = [1, 8, 29, 36, 41]
MSCMR_TEST = [3, 5, 10, 11, 12, 16, 17, 23, 28, 30, 33, 35, 38, 40, 43]
CHAOS_TEST_FOLDS = [[5, 36, 13, 21], [3, 33, 8, 37], [15, 2, 32, 1], [39, 38, 20, 34], [19, 31, 22, 10]]
CHAOS_PATIENTS = sorted(f"patient{i:02d}" for block in CHAOS_TEST_FOLDS for i in block)
#: The 50 DSB2018 stage 1 test images whose masks were released; one image per patient.
DSB2018_IDS = (
    "0114f484a16c152baa2d82fdd43740880a762c93f436c8988ac461c5c9dbe7d5",
    "0999dab07b11bc85fb8464fc36c947fbd8b5d6ec49817361cb780659ca805eac",
    "0a849e0eb15faa8a6d7329c3dd66aabe9a294cccb52ed30a90c8ca99092ae732",
    "0ed3555a4bd48046d3b63d8baf03a5aa97e523aa483aaa07459e7afa39fb96c6",
    "1747f62148a919c8feb6d607faeebdf504b5e2ad42b6b1710b1189c37ebcdb2c",
    "17b9bf4356db24967c4677b8376ac38f826de73a88b93a8d73a8b452e399cdff",
    "191b2b2205f2f5cc9da04702c5d422bc249faf8bca1107af792da63cccfba829",
    "1962d0c5faf3e85cda80e0578e0cb7aca50826d781620e5c1c4cc586bc69f81a",
    "1cdbfee1951356e7b0a215073828695fe1ead5f8b1add119b6645d2fdc8d844e",
    "1d9eacb3161f1e2b45550389ecf7c535c7199c6b44b1c6a46303f7b965e508f1",
    "1ef68e93964c2d9230100c1347c328f6385a7bc027879dc3d4c055e6fe80cb3c",
    "259b35151d4a7a5ffdd7ab7f171b142db8cfe40beeee67277fac6adca4d042c4",
    "295682d9eb5acb5c1976a460c085734bfaf38482b0a3f02591c2bfdcd4128549",
    "31f1fbe85b8899258ea5bcf5f93f7ac8238660c386aeab40649c715bd2e38a0a",
    "336d3e4105766f8ad328a7ee9571e743f376f8cbcf6a969ca7e353fe3235c523",
    "38f5cfb55fc8b048e82a5c895b25fefae7a70c71ab9990c535d1030637bf6a1f",
    "3c4c675825f7509877bc10497f498c9a2e3433bf922bd870914a2eb21a54fd26",
    "44afae184c89e6ba55985b4d341acc1ae1e8b6ef96312064e0e6e630e022b078",
    "4727d94c6a57ed484270fdd8bbc6e3d5f2f15d5476794a4e37a40f2309a091e2",
    "472b1c5ff988dadc209faea92499bc07f305208dbda29d16262b3d543ac91c71",
    "4be73d68f433869188fe5e7f09c7f681ed51003da6aa5d19ce368726d8e271ee",
    "4f949bd8d914bbfa06f40d6a0e2b5b75c38bf53dbcbafc48c97f105bee4f8fac",
    "519dc0d672d1c295fc69b629af8721ccb1a1f136d1976685a68487e62547ffe0",
    "51c70bb8a299943b27f8b354571272692d8f2705036a1a9562156c76da5f025b",
    "53df5150ee56253fe5bc91a9230d377bb21f1300f443ba45a758bcb01a15c0e4",
    "550450e4bff4036fd671decdc5d42fec23578198d6a2fd79179c4368b9d6da18",
    "5cee644e5ffbef1ba021c7f389b33bafd3b1841f04d3edd7922d5084c2c4e0c7",
    "648c8ffa496e1716017906d0bf135debfc93386ae86aa3d4adbda9a505985fd9",
    "697a05c6fe4a07c601d46da80885645ad574ea19b47ee795ccff216c9f1f1808",
    "699f2992cd71e2e28cf45f81347ff22e76b37541ce88087742884cd0e9aadc68",
    "78a981bd27ba0c65a9169548665a17bda9f49050d0d3893a6567d1eb92cd003d",
    "7f4cbe0b36b5d09466476a7d4e01f4f976c67872d549f4ff47b3e1e3a2b403af",
    "8922a6ac8fd0258ec27738ca101867169b20d90a60fc84f93df77acd5bf7c80b",
    "8b59819fbc92eefe45b1db95c0cc3a467ddcfc755684c7f2ba2f6ccb9ad740ab",
    "912a679e4b9b1d1a75170254fd675b8c24b664d80ad7ea7e460241a23535a406",
    "9ab2d381f90b485a68b82bc07f94397a0373e3215ad20935a958738e55f3cfc2",
    "9f17aea854db13015d19b34cb2022cfdeda44133323fcd6bb3545f7b9404d8ab",
    "a984e7fb886aa02e29d112766d3ce26a4f78eac540ce7bbdbd42af2761928f6d",
    "b83d1d77935b6cfd44105b54600ffc4b6bd82de57dec65571bcb117fa8398ba3",
    "bdc789019cee8ddfae20d5f769299993b4b330b2d38d1218646cf89e77fbbd4d",
    "c8e79ff4ac55f4b772057de28e539727b7f4f2a3de73bf7a082a0ace86d609eb",
    "d616d323a9eeb9da1b66f8d5df671d63c092c9919cb2c0b223e29c63257c944d",
    "d6eb7ce7723e2f6dc13b90b41a29ded27dbd815bad633fdf582447c686018896",
    "d8d4bf68a76e4e4c5f21de7ac613451f7115a04db686151e78b8ec0b6a22022b",
    "dab46d798d29aff2e99c23f47ed3064f5cafb1644629b015c95a2dd2ee593bb4",
    "df40099c6306ca1f47fcc8a62e2fa39486d4e223177afdc51b2ad189691802d8",
    "e17b7aedd251a016c01ef9158e6e4aa940d9f1b35942d86028dc1222192a9258",
    "eea70a7948d25a9a791dbcb39228af4ea4049fe5ebdee9c04884be8cca3da835",
    "f0d0ab13ff53adc3c4d57e95a5f83d80b06f2cbc0bf002b52cf7b496612e0ce4",
    "fe9adb627a6f45747c5a8223b671774791ededf9364f6544be487c540107fa4f",
)


def acdc_5fold() -> Split:
    """ACDC five-fold: fold k (0-based) tests patients 20k+1 .. 20k+20; val carved from the other 80."""
    blocks = [ACDC_PATIENTS[20 * k : 20 * (k + 1)] for k in range(5)]
    return _make_split(
        "acdc_5fold",
        "ACDC five-fold cross-validation by patient (patient001-patient100): folds[k] tests the "
        "consecutive block patient{20k+1}..patient{20k+20} as in the scribble-supervised literature "
        "(WSL4MIS, DMPLS). Unlike the published code, which selects models on the test fold, scribmed "
        "holds out a seeded validation subset of the 80 training patients (validation_rule).",
        blocks,
        ACDC_PATIENTS,
        ValidationRule(),
    )


def acdc_heldout_5fold() -> Split:
    """ACDC five-fold over patients 021-080 only; 001-020 stay out as a held-out test set."""
    pool = ACDC_PATIENTS[20:80]
    blocks = [pool[12 * k : 12 * (k + 1)] for k in range(5)]
    return _make_split(
        "acdc_heldout_5fold",
        "ACDC five-fold cross-validation by patient over patient021-patient080 only: folds[k] tests the "
        "consecutive block of 12 patients patient{12k+21}..patient{12k+32}; validation is carved from the "
        "other 48 (validation_rule). patient001-patient020 belong to no fold: no fold trains or selects on "
        "them, so they test a run's ensemble (scribmed predict --run) on unseen patients. All 60 patients are "
        "in the public 80-patient ACDC release.",
        blocks,
        pool,
        ValidationRule(),
    )


def mscmr_split() -> Split:
    """MSCMR (MS-CMRSeg 2019, CycleMix): one fold, train 25 / val 5 / test 15 subjects, given by hand."""
    name = lambda ids: tuple(sorted((f"subject{i}" for i in ids), key=lambda s: int(s[7:])))  # noqa: E731
    fold = Fold(name(MSCMR_TRAIN), name(MSCMR_VAL), name(MSCMR_TEST))
    split = Split(
        "mscmr",
        (fold,),
        None,
        "MS-CMRSeg 2019 LGE scribble split as distributed with CycleMix (Zhang & Zhuang, CVPR 2022): "
        "25 training subjects with scribbles, 5 validation and 15 test subjects with manual labels. "
        "One fold; val is the standard validation set, not carved.",
    )
    _check_folds(split, None)
    return split


def chaos_mr_5fold() -> Split:
    """CHAOS MR five-fold by patient (same split for T1 and T2 scans of a patient)."""
    blocks = [[f"patient{i:02d}" for i in block] for block in CHAOS_TEST_FOLDS]
    return _make_split(
        "chaos_mr_5fold",
        "CHAOS MR (T1 in/out-phase and T2 SPIR, 20 patients) five-fold split by patient id, the "
        "test folds used for CHAOS scribble experiments; T1 and T2 cases of a patient follow the "
        "patient. Validation is carved from the 16 training patients (validation_rule).",
        blocks,
        CHAOS_PATIENTS,
        ValidationRule(),
    )


def dsb2018_5fold() -> Split:
    """DSB2018 nuclei five-fold by image: :func:`make_kfold_split` (seed 0) over :data:`DSB2018_IDS`."""
    split = make_kfold_split(DSB2018_IDS, k=5, seed=0, name="dsb2018_5fold")
    return replace(split, description=(
        "DSB2018 nuclei (stage 1 test images with released masks, 50 images) five-fold split by image "
        "(patient id = image id), made by scribmed.data.splits.make_kfold_split(seed=0): images ordered by "
        "sha256('kfold:<seed>:<image_id>') and dealt round-robin into five test folds of 10; each fold's "
        "validation subset (4 of its 40 training images) is carved by validation_rule."))


#: File name -> generator of every committed split file.
BUILTIN_SPLITS = {
    "acdc_5fold.json": acdc_5fold,
    "acdc_heldout_5fold.json": acdc_heldout_5fold,
    "mscmr.json": mscmr_split,
    "chaos_mr_5fold.json": chaos_mr_5fold,
    "dsb2018_5fold.json": dsb2018_5fold,
}


def write_builtin_splits(directory: str | Path = SPLITS_DIR) -> list[Path]:
    """(Re)write the committed split files into ``directory``; returns their paths."""
    directory = Path(directory)
    return [save_split(make(), directory / fname) for fname, make in BUILTIN_SPLITS.items()]


__all__ = [
    "ACDC_PATIENTS",
    "BUILTIN_SPLITS",
    "CHAOS_PATIENTS",
    "CHAOS_TEST_FOLDS",
    "DSB2018_IDS",
    "MSCMR_TEST",
    "MSCMR_TRAIN",
    "MSCMR_VAL",
    "acdc_5fold",
    "acdc_heldout_5fold",
    "chaos_mr_5fold",
    "dsb2018_5fold",
    "mscmr_split",
    "write_builtin_splits",
]
