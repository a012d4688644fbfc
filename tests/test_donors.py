"""Context from a real donor (augmentor.donors): bank, search and composition on the committed LFW faces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augmentor.donors import DonorBank, DonorConfig, DonorResult
from augmentor.donors.bank import BANK_DIR, BANK_FILE, FEATURES_FILE
from augmentor.donors.compose import compose, fit_similarity, poisson_fill
from augmentor.donors.features import NUM_FEATURES, describe, inner_ring
from augmentor.preprocessing.shards import decode_mask, decode_png, encode_png, read_shards

NUM_PEOPLE = 5  # the 10 fixture faces are relabelled as 5 people of 2 faces each


@pytest.fixture(scope="module")
def donor_shards(tmp_path_factory, lfw_images) -> Path:
    """The LFW fixtures preprocessed, two faces per identity: p0, p0, p1, p1, ..."""
    import pandas as pd

    from augmentor.preprocessing.preprocess import preprocess

    out = tmp_path_factory.mktemp("donor-shards")
    listing = pd.DataFrame(
        {
            "image_id": [p.stem for p in lfw_images[:10]],
            "identity": [f"p{i // 2}" for i in range(10)],
            "path": [str(p) for p in lfw_images[:10]],
        }
    )
    preprocess(listing, out, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def targets(donor_shards) -> dict:
    """The fixture faces as recontext() inputs."""
    table = read_shards(donor_shards, status="ok").to_pydict()
    return {
        "image_id": table["image_id"],
        "identity": table["identity"],
        "aligned": np.stack([decode_png(b) for b in table["aligned"]]),
        "mask": np.stack([decode_mask(b) for b in table["mask"]]),
        "landmarks": np.asarray(table["landmarks"], np.float32).reshape(-1, 68, 2),
    }


def _copy_shards(source: Path, destination: Path) -> Path:
    destination.mkdir(parents=True)
    for path in source.glob("part-*.parquet"):
        shutil.copy2(path, destination / path.name)
    return destination


@pytest.fixture(scope="module")
def bank(donor_shards, tmp_path_factory) -> DonorBank:
    return DonorBank.load(_copy_shards(donor_shards, tmp_path_factory.mktemp("bank") / "shards"))


def test_every_fixture_face_is_a_donor(bank, targets):
    assert len(bank) == len(targets["image_id"]) == 10
    assert bank.features.shape == (10, NUM_FEATURES) and np.isfinite(bank.features).all()
    assert sorted(bank.image_ids) == sorted(targets["image_id"])


def test_face_pixels_are_exact_and_the_context_is_replaced(bank, targets):
    results = bank.recontext(targets["aligned"], targets["mask"], targets["landmarks"], targets["identity"], k=2)
    assert len(results) == len(targets["aligned"])
    for aligned, mask, row in zip(targets["aligned"], targets["mask"], results, strict=True):
        face = mask.astype(bool)
        assert len(row) == 2
        for result in row:
            assert isinstance(result, DonorResult)
            assert result.image.shape == (128, 128, 3) and result.image.dtype == np.uint8
            np.testing.assert_array_equal(result.image[face], aligned[face])
            # The context is the donor's, not the target's own background.
            assert np.abs(result.image[~face].astype(int) - aligned[~face]).mean() > 10


def test_masks_of_255_give_the_same_images(bank, targets):
    ones = bank.recontext(targets["aligned"][:2], targets["mask"][:2], targets["landmarks"][:2], ["", ""], k=1)
    full = bank.recontext(targets["aligned"][:2], targets["mask"][:2] * 255, targets["landmarks"][:2], ["", ""], k=1)
    for a, b in zip(ones, full, strict=True):
        np.testing.assert_array_equal(a[0].image, b[0].image)


def test_a_donor_of_the_same_identity_is_never_chosen(bank, targets):
    others = len(bank) - 2  # every face but the two of the target's identity
    results = bank.recontext(targets["aligned"], targets["mask"], targets["landmarks"], targets["identity"], k=others)
    for identity, row in zip(targets["identity"], results, strict=True):
        assert {r.donor_identity for r in row}.isdisjoint({identity})
        assert len({r.donor_image_id for r in row}) == others
    with pytest.raises(ValueError, match="donors wanted"):
        bank.recontext(targets["aligned"][:1], targets["mask"][:1], targets["landmarks"][:1], ["p0"], k=others + 1)


def test_unknown_identity_excludes_nothing(bank, targets):
    """A face that is in the bank, of unknown identity, is its own nearest donor."""
    results = bank.recontext(targets["aligned"], targets["mask"], targets["landmarks"], [""] * 9 + [None], k=1)
    for image_id, row in zip(targets["image_id"], results, strict=True):
        assert row[0].donor_image_id == image_id
    assert results[0][0].distance < min(
        r.distance
        for r in bank.recontext(
            targets["aligned"][:1], targets["mask"][:1], targets["landmarks"][:1], targets["identity"][:1], k=1
        )[0]
    )


def test_k_copies_differ(bank, targets):
    results = bank.recontext(targets["aligned"], targets["mask"], targets["landmarks"], targets["identity"], k=3)
    for mask, row in zip(targets["mask"], results, strict=True):
        context = ~mask.astype(bool)
        assert len({r.donor_image_id for r in row}) == 3
        distances = [r.distance for r in row]
        assert distances == sorted(distances)
        for a in range(3):
            for b in range(a + 1, 3):
                assert np.abs(row[a].image[context].astype(int) - row[b].image[context]).mean() > 5


def test_the_bank_is_saved_reused_and_rebuilt_when_stale(donor_shards, tmp_path):
    shards = _copy_shards(donor_shards, tmp_path / "shards")
    first = DonorBank.load(shards)
    saved = shards / BANK_DIR
    meta = json.loads((saved / BANK_FILE).read_text())
    assert first.built and meta["count"] == len(first) and meta["id"] == first.id
    with np.load(saved / FEATURES_FILE, allow_pickle=False) as data:  # no pickles
        assert data["image_id"].dtype.kind == "U"
    stamp = (saved / FEATURES_FILE).stat().st_mtime_ns

    for path in (shards, saved):  # the preprocess folder, or the saved bank itself
        again = DonorBank.load(path)
        assert not again.built and again.id == first.id
        np.testing.assert_array_equal(again.features, first.features)
        assert again.image_ids == first.image_ids
        assert (saved / FEATURES_FILE).stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.donor(3)[0], first.donor(3)[0])  # pixels read back from the shards

    # Other bank settings, or changed shards: rebuilt. Search-only settings: reused.
    assert not DonorBank.load(shards, DonorConfig(colour_weight=3.0)).built
    assert DonorBank.load(shards, DonorConfig(ring_width=3)).built
    table = pq.read_table(shards / "part-00000.parquet")
    pq.write_table(table.slice(0, 6), shards / "part-00000.parquet")
    rebuilt = DonorBank.load(shards)
    assert rebuilt.built and len(rebuilt) == 6 and rebuilt.id != first.id


def test_donors_mostly_outside_their_photo_are_skipped(donor_shards, tmp_path):
    """A large border_fraction, or a context mostly filled by reflection (the valid mask), keeps a face out."""
    shards = _copy_shards(donor_shards, tmp_path / "shards")
    path = shards / "part-00000.parquet"
    table = pq.read_table(path)
    border = table["border_fraction"].to_pylist()
    border[0] = 0.9
    valid = table["valid"].to_pylist() if "valid" in table.column_names else [None] * table.num_rows
    outside = np.zeros((128, 128), np.uint8)
    outside[40:100, 30:100] = 255  # the face and a little around it came from the photo; the rest is reflection
    valid[1] = encode_png(outside)
    for name, values, dtype in (("border_fraction", border, pa.float32()), ("valid", valid, pa.binary())):
        column = pa.array(values, dtype)
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, column)
        else:
            table = table.append_column(name, column)
    pq.write_table(table, path)
    border_id, reflected_id = table["image_id"][0].as_py(), table["image_id"][1].as_py()
    kept = DonorBank.load(shards, save=False).image_ids
    assert border_id not in kept and reflected_id not in kept and len(kept) == 8
    lenient = DonorConfig(max_border_fraction=1.0, min_context_valid=0.0)
    bank = DonorBank.load(shards, lenient, save=False)
    assert {border_id, reflected_id} <= set(bank.image_ids)
    assert bank.context_valid[bank.image_ids.index(reflected_id)] < 0.5


def test_compose_keeps_the_face_and_hides_the_donor_edge(targets):
    target, mask, points = targets["aligned"][0], targets["mask"][0], targets["landmarks"][0]
    donor, donor_mask, donor_points = targets["aligned"][1], targets["mask"][1], targets["landmarks"][1]
    out = compose(target, mask, points, donor, donor_mask, donor_points)
    face = mask.astype(bool)
    np.testing.assert_array_equal(out[face], target[face])
    far = np.ones_like(face)
    far[32:112, 24:104] = False  # corners and edges: plain donor context, shifted in colour only
    assert np.abs(out[far].astype(int) - donor[far]).mean() < 40
    assert describe(out, mask, points, 5).shape == (NUM_FEATURES,)


def test_poisson_fill_is_the_harmonic_interpolant_without_guidance():
    fixed = np.zeros((9, 9, 1))
    fixed[:, :3] = 10.0
    fixed[:, 6:] = 40.0
    region = np.zeros((9, 9), bool)
    region[:, 3:6] = True
    out = poisson_fill(fixed, np.zeros_like(fixed), region, np.zeros_like(region))
    np.testing.assert_allclose(out[4, 2:7, 0], [10, 17.5, 25, 32.5, 40], atol=1e-9)  # a linear ramp


def test_fit_similarity_recovers_a_small_move_and_clamps_a_large_one():
    rng = np.random.default_rng(0)
    points = rng.uniform(20, 100, (27, 2))
    angle, scale, shift = np.radians(4.0), 1.05, np.array([2.0, -3.0])
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = fit_similarity(points, points @ linear.T + shift, DonorConfig())
    np.testing.assert_allclose(matrix[:, :2], linear, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)
    clamped = fit_similarity(points, points * 2.0, DonorConfig(max_fit_scale=0.1))
    assert abs(np.sqrt(abs(np.linalg.det(clamped[:, :2]))) - 1.1) < 1e-9
    np.testing.assert_allclose(fit_similarity(points, points + 50, DonorConfig(fit_outline=False)), np.eye(2, 3))


def test_inner_ring_lies_inside_the_mask(targets):
    mask = targets["mask"][0]
    ring = inner_ring(mask, 5)
    assert ring.any() and not ring[mask == 0].any() and ring.sum() < mask.sum()


@pytest.mark.slow  # loads the dlib-ResNet and describes every face (about a minute on 2 busy cores)
def test_appearance_re_ranking_is_the_default_and_stored_in_the_bank(donor_shards, targets, tmp_path):
    assert DonorConfig().appearance  # look-alike donors by default
    shards = _copy_shards(donor_shards, tmp_path / "shards")
    plain = DonorBank.load(shards, DonorConfig(appearance_weight=0.0))
    assert plain.appearance is None
    looks = DonorConfig(appearance_weight=1.0, candidates=6)
    bank = DonorBank.load(shards, looks)
    assert bank.built and bank.appearance.shape == (10, 128) and np.isfinite(bank.appearance).all()
    assert json.loads((shards / BANK_DIR / BANK_FILE).read_text())["appearance"]
    assert not DonorBank.load(shards, DonorConfig(appearance_weight=0.0)).built  # reused either way
    assert not DonorBank.load(shards, looks).built

    unknown = bank.recontext(targets["aligned"], targets["mask"], targets["landmarks"], [""] * 10, k=1)
    assert [row[0].donor_image_id for row in unknown] == targets["image_id"]  # own face: no appearance gap
    results = bank.recontext(targets["aligned"], targets["mask"], targets["landmarks"], targets["identity"], k=3)
    for aligned, mask, identity, row in zip(targets["aligned"], targets["mask"], targets["identity"], results):
        face = mask.astype(bool)
        assert len({r.donor_image_id for r in row}) == 3 and identity not in {r.donor_identity for r in row}
        assert [r.distance for r in row] == sorted(r.distance for r in row)
        for r in row:
            np.testing.assert_array_equal(r.image[face], aligned[face])
    # Each total is the donor's cheap distance (at least the best one) plus a positive appearance gap.
    _, best = plain.search(targets["aligned"], targets["mask"], targets["landmarks"], targets["identity"], 1)
    _, totals = bank.search(targets["aligned"], targets["mask"], targets["landmarks"], targets["identity"], 3)
    assert (totals > best).all()


def test_refined_and_plain_both_keep_the_face_and_differ_in_the_context(bank, targets):
    args = (targets["aligned"][:3], targets["mask"][:3], targets["landmarks"][:3], targets["identity"][:3])
    refined, plain = bank.recontext(*args, k=1), bank.recontext(*args, k=1, refine=False)
    for aligned, mask, a, b in zip(targets["aligned"], targets["mask"], refined, plain):
        face = mask.astype(bool)
        np.testing.assert_array_equal(a[0].image[face], aligned[face])
        np.testing.assert_array_equal(b[0].image[face], aligned[face])
        assert a[0].donor_image_id == b[0].donor_image_id  # the same donor, composed two ways
        assert np.abs(a[0].image[~face].astype(int) - b[0].image[~face]).mean() > 0.5


def test_outline_warp_puts_the_donor_landmarks_on_the_target_and_keeps_the_border():
    from augmentor.donors.seamless import outline_field

    angle = np.linspace(0, 2 * np.pi, 27, endpoint=False)
    target = np.stack([64 + 31 * np.cos(angle), 76 + 30 * np.sin(angle)], 1)  # a face outline
    donor = (target - [64, 76]) * 1.08 + [66, 75]  # a slightly bigger, shifted face
    field = outline_field(donor, target, 128, max_warp=10.0)
    # backward map: pixel p samples the donor at p + field[p]; at a target landmark that is the donor's landmark
    at = field[np.rint(target[:, 1]).astype(int), np.rint(target[:, 0]).astype(int)]
    assert np.abs(target + at - donor).max() < 1.0  # exact at the landmarks up to the grid and rounding
    assert np.abs(field[0]).max() < 0.2 and np.abs(field[:, -1]).max() < 0.2  # the crop's border stays put
    far = outline_field(target + 50, target, 128, max_warp=10.0)
    at = far[np.rint(target[:, 1]).astype(int), np.rint(target[:, 0]).astype(int)]
    np.testing.assert_allclose(np.linalg.norm(at, axis=1), 10.0, atol=1.0)  # a 70 px move is clamped to 10 px


def test_multiband_blend_keeps_each_side_and_mixes_only_near_the_seam():
    from augmentor.donors.seamless import multiband_blend

    inside, outside = np.full((64, 64, 3), 200.0), np.full((64, 64, 3), 50.0)
    mask = np.zeros((64, 64))
    mask[:, :32] = 1
    out = multiband_blend(inside, outside, mask, levels=3)
    np.testing.assert_allclose(out[:, :16], 200.0, atol=1.0)
    np.testing.assert_allclose(out[:, 48:], 50.0, atol=1.0)
    assert 50 < out[0, 32, 0] < 200  # a gradual step across the seam
    identical = multiband_blend(inside, inside, mask, levels=3)
    np.testing.assert_allclose(identical, inside, atol=1e-6)


def test_multiband_blend_fine_sigma_softens_only_the_finest_band_at_the_seam():
    from augmentor.donors.seamless import multiband_blend

    rng = np.random.default_rng(0)
    inside, outside = rng.uniform(0, 255, (64, 64, 3)), rng.uniform(0, 255, (64, 64, 3))
    mask = np.zeros((64, 64))
    mask[:, :32] = 1
    hard = multiband_blend(inside, outside, mask, levels=3)
    np.testing.assert_array_equal(multiband_blend(inside, outside, mask, levels=3, fine_sigma=0.0), hard)
    soft = multiband_blend(inside, outside, mask, levels=3, fine_sigma=1.0)
    changed = np.abs(soft - hard).max(axis=(0, 2)) > 1e-6
    assert changed[30:34].all()  # the columns next to the seam differ
    assert not changed[:24].any() and not changed[40:].any()  # far from it, nothing does
