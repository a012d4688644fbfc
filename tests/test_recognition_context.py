"""Issues 17 and 25: verify-lfw --context (masked, donor and donor-refined backgrounds), arms over seeds in compare,
the grid runner."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from augmentor.cli import main
from recognition import arms, contexts
from recognition.compare import read_runs

ROOT = Path(__file__).resolve().parents[1]
NAMES = 10  # people in the synthetic LFW folder (conftest.lfw_root: LFW_PEOPLE), two images each


# --------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, lfw_root) -> Path:
    """Two folds: matched (_0001, _0002) pairs and mismatched pairs; one names the faceless image second."""
    people = sorted(p.name for p in lfw_root.iterdir() if p.name != "No_Face")
    matched = [f"{n}\t1\t2" for n in people]
    mismatched = [f"{people[i]}\t1\t{people[(i + 3) % len(people)]}\t2" for i in range(len(people) - 1)]
    mismatched.append(f"{people[0]}\t2\tNo_Face\t1")
    n = len(matched) // 2
    lines = ["2\t5"]
    for k in range(2):
        lines += matched[k * n : (k + 1) * n] + mismatched[k * n : (k + 1) * n]
    path = tmp_path_factory.mktemp("pairs") / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _verify(lfw_root: Path, pairs: Path, out: Path, *extra: str):
    args = ["verify-lfw", "--model", "dlib", "--root", str(lfw_root), "--pairs", str(pairs), "--out", str(out)]
    return CliRunner().invoke(main, [*args, "--workers", "1", "--device", "cpu", "--no-progress", *extra])


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory, lfw_root, pairs_file) -> Path:
    out = tmp_path_factory.mktemp("verify") / "masked"
    result = _verify(lfw_root, pairs_file, out, "--context", "masked")
    assert result.exit_code == 0, result.output
    return out


# --------------------------------------------------------------------------------------------------- contexts


def test_parse_contexts():
    assert contexts.parse_contexts(["masked,donor"]) == ("original", "masked", "donor")
    assert contexts.parse_contexts(["donor-refined,donor"]) == ("original", "donor", "donor-refined")
    assert contexts.needs_donors(("original", "donor-refined")) and not contexts.needs_donors(("original", "masked"))
    assert contexts.parse_contexts(["donor", "original", "donor"]) == ("original", "donor")
    assert contexts.parse_contexts([]) == ("original",)
    with pytest.raises(contexts.ContextError, match="unknown context blurred"):
        contexts.parse_contexts(["masked,blurred"])


def test_black_out_keeps_only_the_face():
    images = np.full((2, 4, 4, 3), 200, np.uint8)
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, 1:3, 1:3] = 1
    masks[1, 0, 0] = 255  # stored masks are 0/255 PNGs, decoded ones 0/1: both count as face
    out = contexts.black_out(images, masks)
    assert out.dtype == np.uint8 and out.sum() == 200 * 3 * 5
    assert (out[0, 1:3, 1:3] == 200).all() and (out[0, 0] == 0).all() and (out[1, 0, 0] == 200).all()


def test_run_protocol_with_right_features():
    from recognition import lfw
    from recognition.verify import AlignedImages, VerifySettings, run_protocol

    rng = np.random.default_rng(0)
    names = [f"P{i}/P{i}_0001.jpg" for i in range(8)]
    features = rng.normal(size=(8, 16))
    same = np.array([True, False] * 2 + [True, False] * 2)
    pairs = lfw.Pairs(tuple(names[0::2]), tuple(names[1::2]), same[:4], np.repeat([0, 1], 2), 2, "synthetic")
    aligned = AlignedImages(names, np.zeros((8, 1, 1, 3), np.uint8), [None] * 8)
    settings = VerifySettings()
    _, plain = run_protocol(features, aligned, pairs, None, settings)
    _, unchanged = run_protocol(features, aligned, pairs, None, settings, right_features=features.copy())
    np.testing.assert_allclose(unchanged, plain)
    right = features.copy()
    right[1::2] = features[0::2]  # every second image replaced by its first: every pair scores 1
    _, identical = run_protocol(features, aligned, pairs, None, settings, right_features=right)
    np.testing.assert_allclose(identical, 1.0)
    left_changed = features.copy()
    left_changed[0::2] = 0.0  # the first images are never read from right_features
    _, still = run_protocol(features, aligned, pairs, None, settings, right_features=left_changed)
    np.testing.assert_allclose(still, plain)


def test_verify_lfw_masked_context(masked_run, lfw_root, pairs_file, tmp_path):
    report = json.loads((masked_run / "report.json").read_text())
    from recognition.lfw import read_pairs

    right = set(read_pairs(pairs_file).right)
    assert report["settings"]["contexts"] == ["original", "masked"]
    info = report["contexts"]["masked"]
    assert info["images"] == len(right) == 2 * NAMES // 2 + 1  # every _0002 and the faceless image
    assert info["unchanged"] == ["No_Face/No_Face_0001.jpg"] and info["recontexted"] == info["images"] - 1
    entry = report["models"]["dlib-resnet (fixed)"]
    masked = entry["contexts"]["masked"]
    assert masked["num_pairs"] == entry["num_pairs"] == 20 and len(masked["fold_accuracy"]) == 2
    assert masked["auc"] > 0.8  # the face is all a face network needs
    # the second images' features changed, except the unchanged fallback's
    from recognition.verify import _slug

    slug = _slug("dlib-resnet (fixed)")
    with (
        np.load(masked_run / "features" / f"{slug}.npz") as a,
        np.load(masked_run / "features" / f"{slug}@masked.npz") as b,
    ):
        names = sorted({*read_pairs(pairs_file).left, *right})
        original = a["features"][[names.index(n) for n in sorted(right)]]
        recontexted = b["features"]
    assert recontexted.shape == original.shape == (len(right), 128)
    moved = np.linalg.norm(recontexted - original, axis=1)
    assert moved[sorted(right).index("No_Face/No_Face_0001.jpg")] == 0
    assert (np.delete(moved, sorted(right).index("No_Face/No_Face_0001.jpg")) > 1e-3).all()
    for name in ("roc.png", "roc-masked.png"):
        assert (masked_run / name).stat().st_size > 1000

    # the cached crops: face pixels as aligned, background black
    from augmentor.preprocessing.shards import decode_mask, decode_png, read_shards

    shards = read_shards(masked_run / "aligned", columns=["image_id", "aligned", "mask"], status="ok")
    rows = {r["image_id"]: r for r in shards.to_pylist()}
    with np.load(masked_run / "contexts" / "masked.npz") as cached:
        names = sorted(right)
        for i, name in enumerate(names):
            if name not in rows:
                assert not cached["changed"][i]
                continue
            image, mask = decode_png(rows[name]["aligned"]), decode_mask(rows[name]["mask"]).astype(bool)
            assert cached["changed"][i] and 0 < mask.mean() < 1
            np.testing.assert_array_equal(cached["images"][i][mask], image[mask])
            assert (cached["images"][i][~mask] == 0).all()

    # the original context is the plain run; the printed table lists both contexts
    plain = _verify(lfw_root, pairs_file, tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    original = json.loads((tmp_path / "plain" / "report.json").read_text())["models"]["dlib-resnet (fixed)"]
    assert original["fold_accuracy"] == entry["fold_accuracy"] and original["contexts"] == {}
    again = _verify(lfw_root, pairs_file, masked_run, "--context", "masked")
    assert again.exit_code == 0
    assert "context masked: 10 of 11 second images re-contexted" in again.output
    assert "| dlib-resnet (fixed) | original |" in again.output and "| dlib-resnet (fixed) | masked |" in again.output


@dataclass
class FakeResult:
    image: np.ndarray
    donor_image_id: str
    donor_identity: str
    distance: float


BANK_CALLS: list[dict] = []  # what FakeBank.recontext was given


GREY = {False: 128, True: 64}  # FakeBank's background: plain composition, seamless composition


class FakeBank:
    """Fills the background with one grey (another one when refined); finds no donor for the first identity."""

    @classmethod
    def load(cls, path):
        return cls()

    def recontext(self, aligned, masks, landmarks, identities, k=1, refine=True):
        shapes = (aligned.shape, aligned.dtype, masks.shape, landmarks.shape, landmarks.dtype, k)
        BANK_CALLS.append({"shapes": shapes, "identities": list(identities), "refine": refine})
        out = []
        for i, (image, mask, who) in enumerate(zip(aligned, masks, identities, strict=True)):
            if who == identities[0]:
                out.append([])
                continue
            filled = np.where(mask[..., None] > 0, image, GREY[refine]).astype(np.uint8)
            out.append([FakeResult(filled, f"donor{i}.jpg", f"id{i}", 0.5 + i)])
        return out


@pytest.fixture
def fake_bank(monkeypatch) -> list[dict]:
    """FakeBank stands in for augmentor.donors.DonorBank; returns the list of its recontext calls."""
    module = types.ModuleType("augmentor.donors")
    module.DonorBank = FakeBank
    monkeypatch.setitem(sys.modules, "augmentor.donors", module)
    BANK_CALLS.clear()
    return BANK_CALLS


def test_verify_lfw_donor_context_with_a_fake_bank(fake_bank, lfw_root, pairs_file, tmp_path):
    bank_path = tmp_path / "bank"
    bank_path.mkdir()
    (bank_path / "donors.npz").write_bytes(b"x")
    out = tmp_path / "donor"
    result = _verify(lfw_root, pairs_file, out, "--context", "donor,masked", "--donors", str(bank_path))
    assert result.exit_code == 0, result.output
    (call,) = BANK_CALLS
    assert call["shapes"] == ((10, 128, 128, 3), np.uint8, (10, 128, 128), (10, 68, 2), np.float32, 1)
    assert call["refine"] is False  # donor keeps issue 17's plain composition
    people = sorted(p.name for p in lfw_root.iterdir() if p.name != "No_Face")
    assert call["identities"] == people  # the second images that have a mask, by LFW name
    report = json.loads((out / "report.json").read_text())
    info = report["contexts"]["donor"]
    assert info["recontexted"] == 9 and len(info["unchanged"]) == 2 and "No_Face/No_Face_0001.jpg" in info["unchanged"]
    assert info["distinct_donors"] == 9 and info["donor_distance_mean"] == pytest.approx(
        np.mean(np.arange(1, 10)) + 0.5
    )
    assert set(report["models"]["dlib-resnet (fixed)"]["contexts"]) == {"masked", "donor"}
    assert (out / "roc-donor.png").is_file()
    # cached: a second run does not call the bank again
    assert _verify(lfw_root, pairs_file, out, "--context", "donor", "--donors", str(bank_path)).exit_code == 0
    assert len(BANK_CALLS) == 1


def test_donor_and_donor_refined_contexts_with_a_fake_bank(fake_bank, lfw_root, pairs_file, tmp_path):
    out = tmp_path / "donors"
    result = _verify(lfw_root, pairs_file, out, "--context", "donor-refined,donor", "--donors", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert [c["refine"] for c in BANK_CALLS] == [False, True]  # donor (plain), then donor-refined (seamless)
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["contexts"] == ["original", "donor", "donor-refined"]
    assert set(report["models"]["dlib-resnet (fixed)"]["contexts"]) == {"donor", "donor-refined"}
    assert report["contexts"]["donor-refined"]["recontexted"] == 9
    assert "| dlib-resnet (fixed) | donor-refined |" in result.output and (out / "roc-donor-refined.png").is_file()
    for context, refine in (("donor", False), ("donor-refined", True)):
        with np.load(out / "contexts" / f"{context}.npz") as cached:
            corner = cached["images"][cached["changed"], 0, 0]  # the top-left pixel is background in every crop
            assert (corner == GREY[refine]).all()


def test_make_context_keys_the_composition(tmp_path):
    """A donor cache is only reused for the same composition, so an old cache never stands in for the other."""
    BANK_CALLS.clear()
    images = np.full((2, 128, 128, 3), 30, np.uint8)
    masks = np.zeros((2, 128, 128), np.uint8)
    masks[:, 40:90, 40:90] = 1
    landmarks = [np.zeros((68, 2), np.float32)] * 2
    cache = tmp_path / "ctx.npz"
    names = ["A/A_0001.jpg", "B/B_0001.jpg"]
    for context in ("donor", "donor", "donor-refined", "donor"):
        made = contexts.make_context(context, names, images, masks, landmarks, cache, FakeBank(), "bank")
        assert made.images[1, 0, 0, 0] == GREY[context == "donor-refined"] and made.images[0, 0, 0, 0] == 30
    assert [c["refine"] for c in BANK_CALLS] == [False, True, False]  # the second donor call read the cache


def test_donor_contexts_with_the_real_bank(lfw_root, pairs_file, tmp_path):
    """donor is the bank's plain composition, donor-refined its seamless one; both keep the face pixels."""
    import pandas as pd

    from augmentor.donors import DonorBank
    from augmentor.preprocessing.preprocess import preprocess
    from augmentor.preprocessing.shards import decode_mask, decode_png, read_shards

    rel = [f"{p.name}/{p.name}_{k:04d}.jpg" for p in sorted(lfw_root.iterdir()) if p.name != "No_Face" for k in (1, 2)]
    listing = pd.DataFrame({"image_id": rel, "identity": [r.split("/")[0] for r in rel]})
    listing["path"] = [str(lfw_root / r) for r in rel]
    preprocess(listing, tmp_path / "donors", workers=1, progress=False)
    out = tmp_path / "verify"
    result = _verify(
        lfw_root, pairs_file, out, "--context", "donor,donor-refined", "--donors", str(tmp_path / "donors")
    )
    assert result.exit_code == 0, result.output

    rows = read_shards(out / "aligned", columns=["image_id", "aligned", "mask", "landmarks"], status="ok").to_pylist()
    rows = {r["image_id"]: r for r in rows}
    with np.load(out / "contexts" / "donor.npz") as a, np.load(out / "contexts" / "donor-refined.npz") as b:
        plain, seamless, changed = a["images"], b["images"], a["changed"]
        assert (changed == b["changed"]).all()
    from recognition.lfw import read_pairs

    names = [n for n, c in zip(sorted(set(read_pairs(pairs_file).right)), changed, strict=True) if c]
    assert len(names) == 10
    aligned = np.stack([decode_png(rows[n]["aligned"]) for n in names])
    masks = np.stack([decode_mask(rows[n]["mask"]) for n in names])
    landmarks = np.stack([np.asarray(rows[n]["landmarks"], np.float32).reshape(68, 2) for n in names])
    bank = DonorBank.load(tmp_path / "donors")
    who = [n.split("/")[0] for n in names]
    expected = {
        refine: np.stack([r[0].image for r in bank.recontext(aligned, masks, landmarks, who, k=1, refine=refine)])
        for refine in (False, True)
    }
    np.testing.assert_array_equal(plain[changed], expected[False])
    np.testing.assert_array_equal(seamless[changed], expected[True])
    face = masks.astype(bool)
    np.testing.assert_array_equal(plain[changed][face], aligned[face])
    np.testing.assert_array_equal(seamless[changed][face], aligned[face])
    assert np.abs(plain[changed].astype(int) - seamless[changed].astype(int))[~face].mean() > 1.0


def test_context_errors(monkeypatch, lfw_root, pairs_file, tmp_path):
    result = _verify(lfw_root, pairs_file, tmp_path / "a", "--context", "blurred")
    assert result.exit_code != 0 and "unknown context blurred" in result.output
    result = _verify(lfw_root, pairs_file, tmp_path / "b", "--context", "donor")
    assert result.exit_code != 0 and "--context donor needs --donors" in result.output
    result = _verify(lfw_root, pairs_file, tmp_path / "b", "--context", "masked,donor-refined")
    assert result.exit_code != 0 and "--context donor-refined needs --donors" in result.output
    monkeypatch.setitem(sys.modules, "augmentor.donors", None)  # the donor method is not in this checkout
    result = _verify(lfw_root, pairs_file, tmp_path / "c", "--context", "donor", "--donors", str(tmp_path))
    assert result.exit_code != 0 and "donor-context method" in result.output
    assert not (tmp_path / "c" / "aligned").exists()  # refused before aligning anything


# --------------------------------------------------------------------------------------------------- arms


def _entry(fold_accuracy: list[float], tpr: float, real: int = 9000, fake: int = 0) -> dict:
    return {
        "fold_accuracy": fold_accuracy,
        "accuracy_mean": float(np.mean(fold_accuracy)),
        "accuracy_std": float(np.std(fold_accuracy)),
        "tpr_pooled": {"0.01": tpr, "0.001": tpr - 0.1},
        "tpr_fold_mean": {"0.01": tpr, "0.001": tpr - 0.1},
        "tpr_fold_std": {"0.01": 0.02, "0.001": 0.03},
        "fold_tpr": {"0.01": [tpr] * len(fold_accuracy), "0.001": [tpr - 0.1] * len(fold_accuracy)},
        "num_folds": len(fold_accuracy),
        "training": {"data": {"real_images": real, "identities": 1226, "hallucinated_images": fake}},
    }


BASE_FOLDS = [0.90, 0.92, 0.91, 0.93, 0.90, 0.91, 0.92, 0.90, 0.91, 0.92]  # mean 0.912
SEED_SHIFT = {0: 0.0, 1: 0.006, 2: -0.004}  # training noise, shared by the arms of a seed


def _grid_report(path: Path) -> Path:
    """Two regimes. pretrained: real, cascade (+0.010 on every seed), donor (noise); masked context: real drops
    0.05, cascade 0.02. scratch: real seeds 0-2, cascade seeds 5-7 (no pairing: Welch), and a one-run arm."""
    models = {}
    noise = {0: 0.004, 1: -0.003, 2: -0.001}
    for seed, shift in SEED_SHIFT.items():
        for arm, gain, drop, fake in (
            ("real", 0.0, 0.05, 0),
            ("cascade", 0.010 + 0.001 * seed, 0.02, 9000),
            ("donor", noise[seed], 0.05, 9000),
        ):
            folds = [a + shift + gain for a in BASE_FOLDS]
            entry = _entry(folds, 0.80 + shift + gain, fake=fake)
            slope = 0.002 if arm == "cascade" else 0.001  # cascade's drop shrinks less with the seed
            entry["contexts"] = {"masked": _entry([a - drop - slope * seed for a in folds], 0.7 + shift + gain)}
            models[f"pretrained/{arm}-s{seed}"] = entry
    for seed in (0, 1, 2):
        models[f"scratch/real-s{seed}"] = _entry([a - 0.2 + 0.01 * seed for a in BASE_FOLDS], 0.3)
        models[f"scratch/cascade-s{seed + 5}"] = _entry([a - 0.15 + 0.012 * seed for a in BASE_FOLDS], 0.35)
    models["scratch/donor-s0"] = _entry([a - 0.19 for a in BASE_FOLDS], 0.3)
    for entry in models.values():
        entry.setdefault("contexts", {})
    path.mkdir(parents=True)
    report = {"pairs": "pairs.txt", "num_pairs": 6000, "models": models}
    (path / "report.json").write_text(json.dumps(report))
    return path


def test_group_arms_by_label_and_by_option(tmp_path):
    rows = read_runs([str(_grid_report(tmp_path / "grid"))])
    assert {r.context for r in rows} == {"original", "masked"}
    grouped = {a.name: a for a in arms.group_arms(rows)}
    assert list(grouped) == [
        "pretrained/real",
        "pretrained/cascade",
        "pretrained/donor",
        "scratch/real",
        "scratch/cascade",
        "scratch/donor",
    ]
    assert grouped["pretrained/cascade"].seeds == [0, 1, 2] and grouped["scratch/cascade"].seeds == [5, 6, 7]
    assert grouped["pretrained/cascade"].group == "pretrained" and grouped["pretrained/cascade"].short == "cascade"
    real = grouped["pretrained/real"]
    np.testing.assert_allclose(real.values("original", "accuracy"), [0.912, 0.918, 0.908])
    np.testing.assert_allclose(real.drops("masked", "accuracy"), [-0.05, -0.051, -0.052])

    explicit = arms.group_arms(rows, ["a=pretrained/real-s0,pretrained/real-s1", "b=scratch/real-s0"])
    assert [a.name for a in explicit] == ["a", "b"] and explicit[0].seeds == [0, 1]
    mixed = arms.group_arms(rows, ["m=pretrained/real-s0,pretrained/cascade-s0"])
    assert mixed[0].seeds == [None, None]  # a seed twice: no pairing
    for spec, message in (
        (["m=pretrained/real-s0,scratch/real-s0"], "scratch/real-s0 not scored under context masked"),
        (["a=nobody-s0"], "no model nobody-s0"),
        (["a"], "expected NAME=LABEL"),
        (["a=pretrained/real-s0", "b=pretrained/real-s0"], "two --arm"),
    ):
        with pytest.raises(ValueError, match=message):
            arms.group_arms(rows, spec)


def test_seed_tests_paired_and_welch(tmp_path):
    rows = read_runs([str(_grid_report(tmp_path / "grid"))])
    text, result = arms.compare_arms(rows)
    tests = {(t["arm"], t["context"], t["metric"]): t for t in result["tests"]}

    cascade = tests["pretrained/cascade", "original", "accuracy"]
    real_acc = [np.mean(BASE_FOLDS) + SEED_SHIFT[s] for s in (0, 1, 2)]
    cascade_acc = [a + 0.010 + 0.001 * s for s, a in enumerate(real_acc)]
    expected = stats.ttest_rel(cascade_acc, real_acc)
    assert cascade["test"] == "paired" and cascade["verdict"] == "gain" and cascade["baseline"] == "pretrained/real"
    assert cascade["diff_mean"] == pytest.approx(0.011) and cascade["diff_std"] == pytest.approx(0.001)
    assert cascade["p"] == pytest.approx(expected.pvalue) and cascade["t"] == pytest.approx(expected.statistic)

    donor = tests["pretrained/donor", "original", "accuracy"]
    assert donor["test"] == "paired" and donor["verdict"] == "inside the noise" and donor["p"] > 0.05

    drop = tests["pretrained/cascade", "masked", "accuracy drop"]  # cascade loses 0.02-0.024, real 0.05-0.052
    assert drop["diff_mean"] == pytest.approx(0.029) and drop["diff_std"] == pytest.approx(0.001)
    assert drop["verdict"] == "gain"
    same = tests["pretrained/donor", "masked", "accuracy drop"]  # donor drops exactly as real on every seed
    assert same["diff_std"] == pytest.approx(0.0) and same["verdict"].startswith("untested (no spread")

    welch = tests["scratch/cascade", "original", "accuracy"]
    a = [np.mean(BASE_FOLDS) - 0.2 + 0.01 * s for s in range(3)]
    b = [np.mean(BASE_FOLDS) - 0.15 + 0.012 * s for s in range(3)]
    expected = stats.ttest_ind(b, a, equal_var=False)
    assert welch["test"] == "welch" and welch["p"] == pytest.approx(expected.pvalue)
    assert welch["t"] == pytest.approx(expected.statistic) and welch["verdict"] == "gain"
    assert tests["scratch/donor", "original", "accuracy"]["verdict"].startswith("untested (one run")
    assert ("scratch/cascade", "masked", "accuracy") not in tests  # the scratch models were not re-contexted

    # the printed tables: mean ± sample std over seeds, mean fold std, counts
    real_line = next(line for line in text.splitlines() if line.startswith("| pretrained/real |"))
    acc_std = np.std(real_acc, ddof=1)
    fold_std = np.mean([np.std([a + SEED_SHIFT[s] for a in BASE_FOLDS]) for s in (0, 1, 2)])
    assert f"| 3 (0,1,2) | 9,000 | 0 | {np.mean(real_acc):.4f} ± {acc_std:.4f} | {fold_std:.4f} |" in real_line
    assert "**Context: masked**" in text and "| pretrained/cascade | pretrained/real | masked | accuracy drop |" in text
    assert result["arms"]["pretrained/real"]["contexts"]["original"]["accuracy"]["mean"] == pytest.approx(
        np.mean(real_acc)
    )


def test_compare_cli_arms_and_contexts(tmp_path):
    grid = _grid_report(tmp_path / "grid")
    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(main, ["compare", str(grid), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "| pretrained/cascade | pretrained/real | original | accuracy |" in result.output
    assert "**gain**" in result.output and "**inside the noise**" in result.output
    assert {t["verdict"] for t in json.loads(out.read_text())["tests"]} >= {"gain", "inside the noise"}

    explicit = CliRunner().invoke(
        main,
        ["compare", str(grid), "--arm", "base=scratch/real-s0,scratch/real-s1,scratch/real-s2"]
        + ["--arm", "hal=scratch/cascade-s5,scratch/cascade-s6,scratch/cascade-s7", "--baseline", "base"],
    )
    assert explicit.exit_code == 0, explicit.output
    assert "| hal | base | original | accuracy |" in explicit.output and "| welch |" in explicit.output
    bad = CliRunner().invoke(main, ["compare", str(grid), "--arm", "x=missing-s0"])
    assert bad.exit_code != 0 and "no model missing-s0" in bad.output
    lone = CliRunner().invoke(main, ["compare", str(grid), "--arm", "x=scratch/real-s0", "--baseline", "x"])
    assert lone.exit_code != 0 and "no arm to compare" in lone.output


def test_compare_by_model_with_contexts(tmp_path):
    """Without seeds: one table per context, each model tested fold by fold against the first."""
    a = _entry(BASE_FOLDS, 0.8)
    b = _entry([x + 0.01 for x in BASE_FOLDS], 0.82)
    a["contexts"] = {"masked": _entry([x - 0.05 for x in BASE_FOLDS], 0.6)}
    b["contexts"] = {"masked": _entry([x - 0.01 for x in BASE_FOLDS], 0.7)}
    (tmp_path / "r").mkdir()
    report = {"pairs": "pairs.txt", "num_pairs": 6000, "models": {"real": a, "aug": b}}
    (tmp_path / "r" / "report.json").write_text(json.dumps(report))
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "r"), "--json", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    assert "**Context: original**" in result.output and "**Context: masked**" in result.output
    tests = json.loads((tmp_path / "t.json").read_text())
    assert tests["aug"]["accuracy"]["mean"] == pytest.approx(0.01)
    assert tests["aug [masked]"]["accuracy"]["mean"] == pytest.approx(0.04)
    assert "| real | 9,000 | 1,226 | 0 | 0.6000 |" in result.output  # the masked row keeps the training counts


# --------------------------------------------------------------------------------------------------- regimes


@pytest.mark.parametrize("name", ["grid-pretrained", "grid-scratch"])
def test_grid_configs_load(name):
    from augmentor.config import load_config
    from recognition.finetune import FinetuneConfig

    cfg = load_config(FinetuneConfig, ROOT / "configs" / "recognition" / f"{name}.yaml")
    assert cfg.patience == 0  # a fixed budget for every arm and seed
    if name == "grid-pretrained":
        assert cfg.init == "pretrained" and cfg.model.backbone == "dlib-resnet" and cfg.optim.trunk_lr_scale < 0.1
    else:
        assert cfg.init == "none" and cfg.model.backbone == "resnet18" and 64 <= cfg.data.image_size <= 112


def test_small_image_sizes_train_and_embed():
    import torch

    from recognition.backbone import NetConfig, RecognitionNet

    for size in (64, 96):
        net = RecognitionNet(NetConfig(backbone="resnet18", image_size=size, num_classes=5)).train()
        images = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8)
        embedding, logits = net(images, torch.tensor([0, 1, 2, 3]))
        assert embedding.shape == (4, 256) and logits.shape == (4, 5) and torch.isfinite(logits).all()


def test_finetune_cli_accepts_64_px(tmp_path, lfw_root):
    import pandas as pd

    from augmentor.preprocessing.preprocess import preprocess

    rel = [f"{p.name}/{p.name}_0001.jpg" for p in sorted(lfw_root.iterdir()) if p.name != "No_Face"][:4]
    listing = pd.DataFrame({"image_id": rel, "identity": rel, "path": [str(lfw_root / r) for r in rel]})
    preprocess(listing, tmp_path / "real", workers=1, progress=False)
    result = CliRunner().invoke(main, ["finetune", "--manifest", str(tmp_path / "real"), "--image-size", "64", "-n"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["data"]["image_size"] == 64


# --------------------------------------------------------------------------------------------------- grid runner


def _grid_module():
    import importlib.util

    if "recognition_grid" in sys.modules:
        return sys.modules["recognition_grid"]
    spec = importlib.util.spec_from_file_location("recognition_grid", ROOT / "benchmarks" / "recognition_grid.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["recognition_grid"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def grid_data(tmp_path, pairs_file) -> Path:
    """A --data folder: two listings (200 + 100 faces) and an LFW pairs file."""
    data = tmp_path / "data"
    for name, rows in (("celeba", 200), ("celeba-extra", 100)):
        (data / name).mkdir(parents=True)
        lines = ["path\tidentity"] + [f"images/{i}.jpg\t{i % 5}" for i in range(rows)]
        (data / name / "identities.tsv").write_text("\n".join(lines) + "\n")
    (data / "lfw").mkdir()
    (data / "lfw" / "pairs.txt").write_text(pairs_file.read_text())
    return data


def _fake_run(root: Path, epochs: int, trained: int) -> Path:
    run = root / "00000-resnet18-grid-scratch"
    for sub in ("checkpoint", "last"):
        (run / sub).mkdir(parents=True)
        (run / sub / "config.json").write_text(json.dumps({"epochs_trained": trained}))
    (run / "finetune_config.json").write_text(json.dumps({"epochs": epochs}))
    return run


def test_grid_plan_resumes_and_labels_models(tmp_path, grid_data):
    grid_module = _grid_module()
    out = tmp_path / "grid"
    grid = grid_module.Grid(
        out=out,
        data=grid_data,
        lfw=grid_data / "lfw",
        arms=("real", "cascade"),
        seeds=(0, 1),
        regimes=("scratch",),
        contexts=("original", "masked"),
        epochs={"scratch": 2},
    )
    (out / "data" / "real-celeba").mkdir(parents=True)
    (out / "data" / "real-celeba" / "summary.json").write_text("{}")
    done = _fake_run(out / "runs" / "scratch" / "real-s0", epochs=2, trained=2)
    half = _fake_run(out / "runs" / "scratch" / "cascade-s1", epochs=2, trained=1)
    steps = {s.name: s for s in grid.plan()}
    assert list(steps) == [
        "preprocess celeba",
        "cascade copies of celeba",
        "preprocess celeba-extra",
        "cascade copies of celeba-extra",
        "finetune scratch/real-s0",
        "finetune scratch/real-s1",
        "finetune scratch/cascade-s0",
        "finetune scratch/cascade-s1",
        "verify-lfw",
        "compare",
        "results",
    ]
    assert steps["preprocess celeba"].done and not steps["preprocess celeba-extra"].done
    assert steps["finetune scratch/real-s0"].done and not steps["finetune scratch/cascade-s1"].done
    assert steps["finetune scratch/cascade-s1"].command[-3:] == ["--resume", str(half), "--no-progress"]
    fresh = steps["finetune scratch/cascade-s0"].command
    manifests = [fresh[i + 1] for i, a in enumerate(fresh) if a == "--manifest"]
    assert manifests == [
        str(out / "data" / f"{k}-{d}") for k in ("real", "cascade") for d in ("celeba", "celeba-extra")
    ]
    assert "seed=0" in fresh and fresh[fresh.index("--epochs") + 1] == "2"
    assert "--copy-probability" not in fresh  # the Grid's own defaults are issue 17's union
    assert steps["cascade copies of celeba"].command[-5:-3] == ["--copies", "1"]
    steps_per_epoch = int(0.9 * 300) // 64  # the real training faces / batch: the same for every arm
    assert f"max_steps_per_epoch={steps_per_epoch}" in fresh
    assert steps["finetune scratch/cascade-s0"].seconds == steps["finetune scratch/real-s1"].seconds > 0

    verify = steps["verify-lfw"].command
    assert verify[verify.index("--context") + 1] == "original,masked" and "--donors" not in verify
    labels = [verify[i + 1].split("=")[0] for i, a in enumerate(verify) if a == "--model"]
    assert labels == ["scratch/real-s0", "scratch/real-s1", "scratch/cascade-s0", "scratch/cascade-s1"]
    resolved = grid_module._resolve_models(verify)
    assert [a for a in resolved if a.startswith("scratch/")] == [f"scratch/real-s0={done}"]  # only finished runs
    table = grid_module.show(list(steps.values()))
    assert "| finetune scratch/real-s0 | done |" in table and "| **total** |" in table

    # --measure's rates.json replaces the built-in rates: half the training rate, twice the fine-tune estimate
    rate = grid_module.RATES["scratch"]
    measured = {"scratch": {"train_wall": rate["train"] / 2, "embed_wall": rate["embed"] / 2}}
    (out / "rates.json").write_text(json.dumps({"regimes": measured}))
    slower = {s.name: s for s in grid.plan()}
    startup = grid_module.STARTUP_S
    fresh_seconds = steps["finetune scratch/real-s1"].seconds - startup
    assert slower["finetune scratch/real-s1"].seconds - startup == pytest.approx(2 * fresh_seconds)
    assert slower["verify-lfw"].seconds > steps["verify-lfw"].seconds


def test_grid_dry_run_cli(tmp_path, grid_data):
    grid_module = _grid_module()
    args = ["--out", str(tmp_path / "g"), "--data", str(grid_data), "--seeds", "0,1,2", "--dry-run"]
    result = CliRunner().invoke(grid_module.main, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("| finetune ") == 2 * 4 * 3  # regimes x arms (issue 25's four) x seeds
    commands = result.output.splitlines()
    finetunes = [c for c in commands if " finetune --manifest " in c]
    assert len(finetunes) == 24 and all("--copy-probability 0.5" in c for c in finetunes)  # the real arm too
    v3_config = str(ROOT / "configs" / "recognition" / "grid-pretrained-v3.yaml")
    assert sum(f"--config {v3_config} " in c for c in finetunes) == 12  # regime (a): the frozen-trunk recipe
    assert "--context original,masked,donor,donor-refined --donors" in result.output and "# compare" in result.output
    assert "# results" in result.output and f"--collect --results {tmp_path / 'g' / 'recognition_grid_v3.json'}" in (
        result.output
    )
    assert not (tmp_path / "g").exists()  # a dry run writes nothing
    v2 = ["--union", "--copies", "1", "--arms", "real,cascade,donor", "--contexts", "original,masked,donor"]
    issue17 = CliRunner().invoke(grid_module.main, [*args, *v2])
    assert issue17.exit_code == 0, issue17.output
    assert issue17.output.count("| finetune ") == 2 * 3 * 3 and "--copy-probability" not in issue17.output
    assert "grid-pretrained-v3" not in issue17.output  # issue 17's own recipe
    assert "--context original,masked,donor --donors" in issue17.output and "-k1-" not in issue17.output
    bad = CliRunner().invoke(grid_module.main, [*args, "--arms", "cascade"])
    assert bad.exit_code != 0 and "must include real" in bad.output
    bad = CliRunner().invoke(grid_module.main, [*args, "--epochs", "fast=3"])
    assert bad.exit_code != 0 and "REGIME=N" in bad.output
    bad = CliRunner().invoke(grid_module.main, [*args, "--regime-config", "pretrained=missing.yaml"])
    assert bad.exit_code != 0 and "REGIME=YAML" in bad.output


def test_grid_measure_cli_writes_rates(tmp_path, monkeypatch):
    """--measure: one table row and one rates.json entry per regime, each measured with that regime's config."""
    grid_module = _grid_module()
    calls = []

    def fake_measure(regime, shards, steps, config):
        calls.append((regime, shards, steps, config))
        base = 100.0 if regime == "scratch" else 10.0
        keys = ("train_wall", "train_cpu_ms", "train_2core", "embed_wall", "embed_cpu_ms", "embed_2core", "load")
        return {key: base + i for i, key in enumerate(keys)}

    monkeypatch.setattr(grid_module, "measure_rates", fake_measure)
    shards = tmp_path / "shards"
    shards.mkdir()
    out = tmp_path / "g"
    args = ["--out", str(out), "--measure", str(shards), "--measure-steps", "3"]
    result = CliRunner().invoke(grid_module.main, args)
    assert result.exit_code == 0, result.output
    v3_config = ROOT / "configs" / "recognition" / "grid-pretrained-v3.yaml"
    assert calls == [("pretrained", shards, 3, v3_config), ("scratch", shards, 3, None)]
    assert "| scratch | 100.0 | 101 | 102.0 | 103.0 | 104.0 | 105.0 | 106.0 |" in result.output
    written = json.loads((out / "rates.json").read_text())
    assert written["shards"] == str(shards) and written["regimes"]["pretrained"]["embed_wall"] == 13.0


def test_grid_v3_plan_copies_and_probability(tmp_path, grid_data):
    """K copies per kind (plain and seamless donors apart), the same --copy-probability for every arm."""
    grid_module = _grid_module()
    out = tmp_path / "grid"
    gentle = tmp_path / "gentle.yaml"
    gentle.write_text((ROOT / "configs" / "recognition" / "grid-pretrained.yaml").read_text())
    grid = grid_module.Grid(
        out=out,
        data=grid_data,
        lfw=grid_data / "lfw",
        arms=("real", "donor", "donor-refined"),
        seeds=(0,),
        regimes=("pretrained",),
        contexts=("original", "donor-refined"),
        copies=3,
        copy_probability=0.25,
        configs={"pretrained": gentle},
    )
    steps = {s.name: s for s in grid.plan()}
    plain, seamless = steps["donor copies of celeba"].command, steps["donor-refined copies of celeba"].command
    assert "--no-refine" in plain and "--refine" not in plain and "--refine" in seamless
    for command in (plain, seamless):
        assert command[command.index("--copies") + 1] == "3"
        assert command[command.index("--donors") + 1] == str(out / "data" / "real-celeba")
    assert plain[plain.index("--out") + 1] == str(out / "data" / "donor-k3-celeba")
    assert "cascade copies of celeba" not in steps
    for arm, kind in (("real", None), ("donor", "donor-k3"), ("donor-refined", "donor-refined-k3")):
        command = steps[f"finetune pretrained/{arm}-s0"].command
        manifests = [command[i + 1] for i, a in enumerate(command) if a == "--manifest"]
        expected = [f"real-{d}" for d in grid_module.DATASETS] + (
            [f"{kind}-{d}" for d in grid_module.DATASETS] if kind else []
        )
        assert manifests == [str(out / "data" / e) for e in expected]
        assert command[command.index("--copy-probability") + 1] == "0.25"
        assert command[command.index("--config") + 1] == str(gentle)
    verify = steps["verify-lfw"].command
    assert verify[verify.index("--context") + 1] == "original,donor-refined" and "--donors" in verify
    assert steps["results"].output == out / "recognition_grid_v3.json"
    settings = grid.settings()
    assert settings["mode"] == "probability" and settings["copies"] == 3 and settings["copy_probability"] == 0.25
    assert settings["configs"] == {"pretrained": str(gentle)}


def test_grid_collect_results(tmp_path):
    """Per regime, arm and context: each seed's accuracy and TPR at FPR 0.01 and 0.001, and compare's tests."""
    grid_module = _grid_module()
    out = tmp_path / "grid"
    _grid_report(out / "verify")
    assert (
        CliRunner().invoke(main, ["compare", str(out / "verify"), "--json", str(out / "compare.json")]).exit_code == 0
    )
    (out / "grid.json").write_text(json.dumps({"copies": 3}))
    target = tmp_path / "results" / "v3.json"
    result = CliRunner().invoke(grid_module.main, ["--out", str(out), "--collect", "--results", str(target)])
    assert result.exit_code == 0, result.output
    written = json.loads(target.read_text())
    assert written["grid"] == {"copies": 3} and written["num_pairs"] == 6000
    cascade = written["results"]["pretrained"]["cascade"]
    assert set(cascade) == {"original", "masked"}
    real_acc = [np.mean(BASE_FOLDS) + SEED_SHIFT[s] for s in (0, 1, 2)]
    original = cascade["original"]
    assert original["seeds"] == [0, 1, 2]
    np.testing.assert_allclose(original["accuracy"], [a + 0.010 + 0.001 * s for s, a in enumerate(real_acc)])
    np.testing.assert_allclose(original["tpr_at_fpr_0.01"], [0.81 + SEED_SHIFT[s] + 0.001 * s for s in (0, 1, 2)])
    np.testing.assert_allclose(original["tpr_at_fpr_0.001"], np.array(original["tpr_at_fpr_0.01"]) - 0.1)
    assert original["mean"]["accuracy"] == pytest.approx(np.mean(original["accuracy"]))
    assert written["results"]["scratch"]["cascade"]["original"]["seeds"] == [5, 6, 7]
    metrics = {(t["arm"], t["context"], t["metric"]) for t in written["tests"]}
    assert ("pretrained/cascade", "original", "TPR@FPR=0.001") in metrics
    assert ("pretrained/cascade", "masked", "TPR@FPR=0.001 drop") in metrics
    missing = CliRunner().invoke(grid_module.main, ["--out", str(tmp_path / "none"), "--collect"])
    assert missing.exit_code != 0 and "run the grid first" in missing.output


def _merge_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("merge_grid_results", ROOT / "benchmarks" / "merge_grid_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_merge_grid_results_round_trip_and_refusals(tmp_path):
    """Regimes collected from separate grids merge back into what one grid would have written; overlapping
    regimes, a different alignment or evaluation, and a file that is not a results file are refused."""
    merge = _merge_module()
    out = tmp_path / "grid"
    _grid_report(out / "verify")
    assert (
        CliRunner().invoke(main, ["compare", str(out / "verify"), "--json", str(out / "compare.json")]).exit_code == 0
    )
    (out / "grid.json").write_text(
        json.dumps({"copies": 3, "regimes": ["pretrained", "scratch"], "configs": {"pretrained": "a", "scratch": "b"}})
    )
    whole = _grid_module().collect_results(out)
    assert set(whole["results"]) == {"pretrained", "scratch"}
    parts = {}
    for regime, config in (("pretrained", "a"), ("scratch", "b")):
        part = json.loads(json.dumps(whole))
        part["grid"].update(regimes=[regime], configs={regime: config})
        part["results"] = {regime: whole["results"][regime]}
        part["tests"] = [t for t in whole["tests"] if t["arm"].startswith(f"{regime}/")]
        assert part["tests"]
        path = tmp_path / f"{regime}.json"
        path.write_text(json.dumps(part))
        parts[regime] = path
    target = tmp_path / "merged" / "v3.json"
    result = CliRunner().invoke(merge.main, [str(parts["pretrained"]), str(parts["scratch"]), "--out", str(target)])
    assert result.exit_code == 0, result.output
    merged = json.loads(target.read_text())
    assert merged.pop("merged_from") == [str(parts["pretrained"]), str(parts["scratch"])]
    assert merged == whole
    again = CliRunner().invoke(merge.main, [str(parts["scratch"]), str(parts["scratch"]), "--out", str(target)])
    assert again.exit_code != 0 and "regime scratch is already in an earlier part" in again.output
    shifted = json.loads(parts["scratch"].read_text())
    shifted["num_pairs"] = 3000
    (tmp_path / "shifted.json").write_text(json.dumps(shifted))
    refused = CliRunner().invoke(
        merge.main, [str(parts["pretrained"]), str(tmp_path / "shifted.json"), "--out", str(target)]
    )
    assert refused.exit_code != 0 and "num_pairs (6000 and 3000)" in refused.output
    assert merge.first_difference({"d": [1.0, 2.0]}, {"d": [1.0, 2.0 + 1e-12]}) is None
    assert merge.first_difference({"d": [1.0, 2.0]}, {"d": [1.0, 2.1]}) == "/d[1] (2.0 and 2.1)"
    (tmp_path / "other.json").write_text(json.dumps({"tests": []}))
    foreign = CliRunner().invoke(
        merge.main, [str(parts["pretrained"]), str(tmp_path / "other.json"), "--out", str(target)]
    )
    assert foreign.exit_code != 0 and "not a recognition_grid.py --collect file (no grid, results)" in foreign.output
