"""Issue 26: any face recogniser in verify-lfw (ONNX, TorchScript, facenet-pytorch) and five-point alignment."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from augmentor.cli import main
from recognition import five_point
from recognition.embedders import load_embedder, spec

pytestmark = [  # the test models are made with torch's TorchScript tools, deprecated upstream but still supported
    pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning"),
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]
ONNX_SIZE = 96  # the test ONNX model's fixed input side: verify-lfw must read it from the model
FLAT_SIZE = 24  # the flattening TorchScript model's input side (given in the spec)


# --------------------------------------------------------------------------------------------------- models


class TinyNet(torch.nn.Module):
    """A small embedding network: conv, pool, linear -> 8-D."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 5, stride=3)
        self.fc = torch.nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class Flatten(torch.nn.Module):
    """Returns its (normalised) input, flattened: the features are the chip's pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def export_onnx(path: Path, net: torch.nn.Module, size: int, metadata: dict[str, str] | None = None) -> Path:
    x = torch.randn(2, 3, size, size)
    torch.onnx.export(
        net, (x,), str(path), input_names=["data"], output_names=["fc1"], dynamic_axes={"data": {0: "n"}}, dynamo=False
    )
    if metadata:
        import onnx

        model = onnx.load(str(path))
        for key, value in metadata.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    net = TinyNet().eval()
    files = {
        "onnx": export_onnx(folder / "tiny.onnx", net, ONNX_SIZE, {"input_mean": "0", "input_std": "255"}),
        "torchscript": folder / "tiny.pt",
        "flat": folder / "flat.pt",
    }
    torch.jit.save(torch.jit.trace(net, torch.randn(1, 3, 112, 112)), str(files["torchscript"]))
    torch.jit.save(torch.jit.script(Flatten()), str(files["flat"]))
    return files


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds a (random) InceptionResnetV1 state dict under facenet-pytorch's name."""
    from facenet_pytorch import InceptionResnetV1

    home = tmp_path_factory.mktemp("torch")
    torch.manual_seed(1)
    net = InceptionResnetV1(classify=True, num_classes=7).eval()  # with a classifier, as the released files are
    target = home / "hub" / "checkpoints" / spec.FACENET_FILES["vggface2"]
    target.parent.mkdir(parents=True)
    torch.save(net.state_dict(), target)
    return home


# --------------------------------------------------------------------------------------------------- alignment


def test_template_sizes_follow_insightface():
    np.testing.assert_allclose(five_point.template(112), five_point.ARCFACE_TEMPLATE)
    np.testing.assert_allclose(five_point.template(224), five_point.ARCFACE_TEMPLATE * 2)
    expected = five_point.ARCFACE_TEMPLATE.copy()  # estimate_norm for 128: ratio 1, x + 8
    expected[:, 0] += 8
    np.testing.assert_allclose(five_point.template(128), expected)


def test_umeyama_matches_skimage():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(0)
    src = rng.uniform(20, 100, (5, 2))
    dst = five_point.ARCFACE_TEMPLATE + rng.normal(0, 2, (5, 2))
    reference = SimilarityTransform.from_estimate(src, dst)
    np.testing.assert_allclose(five_point.umeyama(src, dst), reference.params[:2], atol=1e-9)


def _landmarks_for(points5: np.ndarray) -> np.ndarray:
    """68 landmarks whose five points are ``points5``: each eye a ring around its centre."""
    landmarks = np.zeros((68, 2))
    ring = np.array([[-3, 0], [-1.5, -1], [1.5, -1], [3, 0], [1.5, 1], [-1.5, 1]])
    landmarks[36:42] = points5[0] + ring
    landmarks[42:48] = points5[1] + ring
    landmarks[30], landmarks[48], landmarks[54] = points5[2], points5[3], points5[4]
    return landmarks


def test_five_point_alignment_lands_on_the_template():
    # five points placed by a known similarity (rotation 12 deg, scale 0.8) of the template into a 128 px crop
    angle, scale, shift = np.deg2rad(12), 0.8, np.array([20.0, 14.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = five_point.ARCFACE_TEMPLATE @ rotation.T + shift
    landmarks = _landmarks_for(points)
    np.testing.assert_allclose(five_point.five_points(landmarks), points, atol=1e-12)
    matrix = five_point.five_point_matrix(landmarks)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, five_point.ARCFACE_TEMPLATE, atol=1e-9)
    # a bright dot at each point of the crop lands on the template point of the chip
    image = np.zeros((128, 128, 3), np.uint8)
    for x, y in np.round(points).astype(int):
        image[y - 1 : y + 2, x - 1 : x + 2] = 255
    chip = five_point.align_five_point(image, landmarks)
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    for x, y in five_point.ARCFACE_TEMPLATE:
        window = chip[int(y) - 4 : int(y) + 5, int(x) - 4 : int(x) + 5, 0].astype(float)
        ys, xs = np.nonzero(window > 60)
        weights = window[ys, xs]
        centre = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
        np.testing.assert_allclose(centre + [int(x) - 4, int(y) - 4], [x, y], atol=1.0)


def test_fallback_maps_our_eyes_onto_the_arcface_eyes():
    from augmentor.faces.align import Template
    from recognition.embedders.chips import fallback_matrix

    ours = Template()
    matrix = fallback_matrix(128, 112)
    eyes = np.array([ours.left_eye, ours.right_eye]) @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(eyes, five_point.ARCFACE_TEMPLATE[:2], atol=0.5)  # two points: their mean line


# --------------------------------------------------------------------------------------------------- specs


def test_parse_model_spec():
    parsed = spec.parse_model_spec("onnx:/m/w600k_r50.onnx,size=112,mean=0,std=1,channels=bgr")
    assert parsed.kind == "onnx" and parsed.source == "/m/w600k_r50.onnx"
    assert parsed.inputs == spec.InputOptions(112, 0.0, 1.0, "five-point", "bgr")
    assert parsed.default_label() == "onnx:w600k_r50"
    assert spec.parse_model_spec("facenet:vggface2").default_label() == "facenet:vggface2"
    assert spec.parse_model_spec("torchscript:a.pt,align=crop").inputs.align == "crop"
    assert (
        spec.is_model_spec("onnx:a.onnx") and not spec.is_model_spec("runs/00001-x") and not spec.is_model_spec("dlib")
    )
    for bad, message in [
        ("tflite:a", "unknown model kind"),
        ("onnx:", "no model"),
        ("onnx:a.onnx,size", "KEY=VALUE"),
        ("onnx:a.onnx,colour=1", "unknown option"),
        ("onnx:a.onnx,size=big", "bad value"),
        ("onnx:a.onnx,std=0", "bad value"),
        ("onnx:a.onnx,align=eyes", "bad value"),
    ]:
        with pytest.raises(spec.SpecError, match=message):
            spec.parse_model_spec(bad)


def test_facenet_weights_missing_says_how_to_supply_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        spec.facenet_weights("casia-webface")
    message = str(info.value)
    assert "nothing is downloaded" in message and "20180408-102900-casia-webface.pt" in message
    assert str(tmp_path / "hub" / "checkpoints") in message and "facenet:/path/to/" in message
    assert not (tmp_path / "hub").exists() and not (tmp_path / "checkpoints").exists()  # nothing made or fetched
    # facenet-pytorch's own cache folder is found too
    own = tmp_path / "checkpoints" / spec.FACENET_FILES["casia-webface"]
    own.parent.mkdir()
    own.write_bytes(b"x")
    assert spec.facenet_weights("casia-webface") == own


# --------------------------------------------------------------------------------------------------- embedders


def _crops(n: int = 3) -> tuple[np.ndarray, list]:
    from augmentor.faces.align import Template

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
    t = Template()
    points = np.array([t.left_eye, t.right_eye, (64, 76), (54, 92), (74, 92)], float)
    return images, [_landmarks_for(points + 1), None, _landmarks_for(points - 1)][:n]


def test_onnx_embedder_reads_size_and_normalisation(model_files):
    from recognition.embedders.chips import make_chips

    embedder = load_embedder(f"onnx:{model_files['onnx']}", torch.device("cpu"))
    assert (embedder.inputs.size, embedder.inputs.mean, embedder.inputs.std) == (ONNX_SIZE, 0.0, 255.0)
    images, landmarks = _crops()
    chips = make_chips(images, landmarks, embedder.inputs)
    assert chips.shape == (3, ONNX_SIZE, ONNX_SIZE, 3)
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        expected = TinyNet().eval()(x).numpy()
    np.testing.assert_allclose(embedder(images, landmarks, flip=False), expected, atol=1e-5)
    with torch.no_grad():
        flipped = expected + TinyNet().eval()(x.flip(-1)).numpy()
    np.testing.assert_allclose(embedder(images, landmarks, flip=True), flipped, atol=1e-5)
    with pytest.raises(spec.SpecError, match="takes 96 px"):
        load_embedder(f"onnx:{model_files['onnx']},size=112", torch.device("cpu"))


def test_onnx_normalisation_rule_without_metadata(tmp_path):
    from recognition.embedders.onnx_model import normalisation_of

    class SelfNormalising(torch.nn.Module):
        def forward(self, x):
            return ((x - 127.5) * 0.0078125).mean(dim=(2, 3))

    plain = export_onnx(tmp_path / "plain.onnx", TinyNet().eval(), 112)
    mxnet_like = export_onnx(tmp_path / "mx.onnx", SelfNormalising(), 112)
    assert normalisation_of(plain, {}) == (127.5, 127.5)
    assert normalisation_of(mxnet_like, {}) == (0.0, 1.0)
    assert normalisation_of(plain, {"input_mean": "0.5", "input_std": "2"}) == (0.5, 2.0)


def test_torchscript_embedder_matches_the_module(model_files):
    from recognition.embedders.chips import make_chips

    embedder = load_embedder(f"torchscript:{model_files['torchscript']}", torch.device("cpu"))
    assert (embedder.inputs.size, embedder.inputs.mean, embedder.inputs.std) == (112, 127.5, 127.5)
    images, landmarks = _crops()
    x = (torch.from_numpy(make_chips(images, landmarks, embedder.inputs)).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    with torch.no_grad():
        expected = TinyNet().eval()(x).numpy()
    np.testing.assert_allclose(embedder(images, landmarks, flip=False), expected, atol=1e-5)
    bgr = load_embedder(f"torchscript:{model_files['flat']},size=16,channels=bgr,mean=0,std=1", torch.device("cpu"))
    rgb = load_embedder(f"torchscript:{model_files['flat']},size=16,mean=0,std=1", torch.device("cpu"))
    a = bgr(images, landmarks, False).reshape(3, 3, 16, 16)
    b = rgb(images, landmarks, False).reshape(3, 3, 16, 16)
    np.testing.assert_array_equal(a, b[:, ::-1])


def test_facenet_loads_from_the_hub_cache(torch_home, monkeypatch, tmp_path):
    from facenet_pytorch import InceptionResnetV1

    from recognition.embedders.chips import make_chips

    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    embedder = load_embedder("facenet:vggface2", torch.device("cpu"))
    assert (embedder.inputs.size, embedder.inputs.mean, embedder.inputs.std) == (160, 127.5, 128.0)
    reference = InceptionResnetV1().eval()
    state = torch.load(torch_home / "hub" / "checkpoints" / spec.FACENET_FILES["vggface2"], weights_only=True)
    reference.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits")})
    images, landmarks = _crops(2)
    chips = torch.from_numpy(make_chips(images, landmarks, embedder.inputs)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        expected = reference((chips - 127.5) / 128.0).numpy()
    features = embedder(images, landmarks, flip=False)
    assert features.shape == (2, 512)
    np.testing.assert_allclose(features, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    # a path works too; a file that is no state dict, or one of another network, is a clear error
    by_path = load_embedder(f"facenet:{torch_home / 'hub' / 'checkpoints' / spec.FACENET_FILES['vggface2']}", "cpu")
    np.testing.assert_allclose(by_path(images, landmarks, False), features, atol=1e-6)
    (tmp_path / "junk.pt").write_bytes(b"not a state dict")
    with pytest.raises(spec.SpecError, match="not a facenet-pytorch state dict"):
        load_embedder(f"facenet:{tmp_path / 'junk.pt'}", "cpu")
    torch.save(TinyNet().state_dict(), tmp_path / "other.pt")
    with pytest.raises(spec.SpecError, match="does not fit InceptionResnetV1"):
        load_embedder(f"facenet:{tmp_path / 'other.pt'}", "cpu")


# --------------------------------------------------------------------------------------------------- verify-lfw


@pytest.fixture(scope="module")
def four_pairs(tmp_path_factory, lfw_root) -> Path:
    """Two folds of one matched and one mismatched pair; the last pair's second image has no face."""
    people = sorted(p.name for p in lfw_root.iterdir() if p.name != "No_Face")
    lines = ["2\t1", f"{people[0]}\t1\t2", f"{people[1]}\t1\t{people[2]}\t2"]
    lines += [f"{people[3]}\t1\t2", f"{people[4]}\t1\tNo_Face\t1"]
    path = tmp_path_factory.mktemp("pairs4") / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Found:
    image: np.ndarray
    donor_image_id: str
    donor_identity: str
    distance: float


class GreyBank:
    """A donor bank that fills every background with one grey."""

    @classmethod
    def load(cls, path):
        return cls()

    def recontext(self, aligned, masks, landmarks, identities, k=1, refine=True):
        return [
            [Found(np.where(m[..., None] > 0, a, 128).astype(np.uint8), f"d{i}", f"id{i}", 1.0)]
            for i, (a, m) in enumerate(zip(aligned, masks, strict=True))
        ]


def test_verify_lfw_runs_every_kind_in_every_context(
    model_files, torch_home, four_pairs, lfw_root, tmp_path, monkeypatch
):
    module = types.ModuleType("augmentor.donors")
    module.DonorBank = GreyBank
    monkeypatch.setitem(sys.modules, "augmentor.donors", module)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    out = tmp_path / "verify"
    models = [
        f"arc=onnx:{model_files['onnx']}",
        f"torchscript:{model_files['torchscript']}",
        "fn=facenet:vggface2",
        f"flat=torchscript:{model_files['flat']},size={FLAT_SIZE},mean=0,std=1",
    ]
    args = ["verify-lfw", *[a for m in models for a in ("--model", m)], "--root", str(lfw_root)]
    args += ["--pairs", str(four_pairs), "--out", str(out), "--context", "masked,donor", "--donors", str(tmp_path)]
    result = CliRunner().invoke(main, [*args, "--workers", "1", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["num_pairs"] == 4 and report["alignment"]["centre_crop_fallback"] == 1
    dims = {"arc": 8, "torchscript:tiny": 8, "fn": 512, "flat": 3 * FLAT_SIZE**2}
    assert {n: m["feature_dim"] for n, m in report["models"].items()} == dims
    assert report["models"]["arc"]["architecture"]["size"] == ONNX_SIZE
    assert report["models"]["fn"]["architecture"]["size"] == 160
    for name, entry in report["models"].items():
        assert set(entry["contexts"]) == {"masked", "donor"}, name
        for result_entry in (entry, *entry["contexts"].values()):
            assert result_entry["num_pairs"] == 4 and len(result_entry["fold_accuracy"]) == 2
            assert np.isfinite(result_entry["auc"])
    for line in ("| arc | original |", "| fn | donor |", "| torchscript:tiny | masked |"):
        assert line in result.output
    _check_flat_features(out, lfw_root, four_pairs)

    compared = CliRunner().invoke(main, ["compare", str(out)])
    assert compared.exit_code == 0, compared.output
    assert "**Context: donor**" in compared.output and "**fn vs arc**" in compared.output


def _check_flat_features(out: Path, lfw_root: Path, pairs: Path) -> None:
    """The flattening model's features are the chips the embedder should make: arcface chips of the aligned (and
    the masked) crops, the faceless image a fallback chip."""
    from augmentor.preprocessing.shards import decode_mask, decode_png, read_shards
    from recognition.contexts import black_out
    from recognition.embedders.chips import make_chips
    from recognition.embedders.spec import InputOptions
    from recognition.lfw import read_pairs

    inputs = InputOptions(FLAT_SIZE, 0.0, 1.0)
    rows = {r["image_id"]: r for r in read_shards(out / "aligned", status="ok").to_pylist()}
    right = sorted(set(read_pairs(pairs).right))
    names = sorted(set(read_pairs(pairs).images()))
    with np.load(out / "features" / "flat.npz") as plain, np.load(out / "features" / "flat@masked.npz") as masked:
        for name in right:
            if name not in rows:  # the faceless image: scored unchanged in every context
                row = plain["features"][names.index(name)]
                np.testing.assert_array_equal(masked["features"][right.index(name)], row)
                continue
            image, mask = decode_png(rows[name]["aligned"]), decode_mask(rows[name]["mask"])
            landmarks = [np.asarray(rows[name]["landmarks"], np.float32).reshape(68, 2)]
            chip = make_chips(image[None], landmarks, inputs)[0].transpose(2, 0, 1).reshape(-1)
            np.testing.assert_array_equal(plain["features"][names.index(name)], chip.astype(np.float32))
            dark = make_chips(black_out(image[None], mask[None]), landmarks, inputs)[0]
            np.testing.assert_array_equal(masked["features"][right.index(name)], dark.transpose(2, 0, 1).reshape(-1))


def test_verify_lfw_model_errors(tmp_path, lfw_root, four_pairs, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    base = ["verify-lfw", "--root", str(lfw_root), "--pairs", str(four_pairs), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, [*base, "--model", "fn=facenet:vggface2"])
    assert result.exit_code != 0 and "nothing is downloaded" in result.output
    result = CliRunner().invoke(main, [*base, "--model", f"onnx:{tmp_path / 'none.onnx'}"])
    assert result.exit_code != 0 and "no such file" in result.output
    result = CliRunner().invoke(main, [*base, "--model", "onnx:x.onnx,depth=3"])
    assert result.exit_code != 0 and "unknown option" in result.output
    assert not (tmp_path / "o").exists()  # refused before aligning


def test_verify_lfw_help_examples_stay_on_their_lines():
    """A lone backslash at the end of a docstring line joined two example lines into one."""
    result = CliRunner().invoke(main, ["verify-lfw", "--help"], terminal_width=200)
    lines = [line.strip() for line in result.output.splitlines()]
    donors = next(line for line in lines if "--donors runs/donors" in line)
    assert donors.endswith("\\") and "--root" not in donors
    assert lines[lines.index(donors) + 1].startswith("--root data/lfw/images")
    continued = [i for i, line in enumerate(lines) if line.startswith("augmentor verify-lfw") and line.endswith("\\")]
    assert continued and all(lines[i + 1].startswith("--") for i in continued)


def test_unreadable_model_files_are_spec_errors(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00not a model" * 10)
    for kind in ("onnx", "torchscript"):
        with pytest.raises(spec.SpecError, match="not an? (ONNX model|TorchScript file)"):
            load_embedder(f"{kind}:{junk}", "cpu")


# --------------------------------------------------------------------------------------------------- verify steps


def test_verify_steps(four_pairs, lfw_root):
    from recognition import verify
    from recognition.features import AlignedImages

    settings = verify.VerifySettings()
    pairs, train = verify.load_pairs(four_pairs, settings)
    assert len(pairs) == 4 and train is None
    limited, _ = verify.load_pairs(four_pairs, verify.VerifySettings(limit=1))
    assert len(limited) == 4  # one matched and one mismatched per fold already
    with pytest.raises(ValueError, match="--train-pairs is for --view dev"):
        verify.load_pairs(four_pairs, verify.VerifySettings(train_pairs=str(four_pairs)))
    with pytest.raises(ValueError, match="View 2 file"):
        verify.load_pairs(four_pairs, verify.VerifySettings(view="dev"))
    names = verify.image_names(lfw_root, pairs, None)
    assert names == sorted(set(pairs.left) | set(pairs.right)) and len(names) == 8
    assert verify.second_images(pairs, None) == sorted(set(pairs.right))
    ghost = verify.lfw.Pairs(("Nobody/Nobody_0001.jpg",), pairs.right[:1], pairs.same[:1], pairs.fold[:1], 1)
    with pytest.raises(FileNotFoundError, match="1 image.*Nobody/Nobody_0001.jpg"):
        verify.image_names(lfw_root, ghost, None)
    aligned = AlignedImages(names, np.zeros((8, 4, 4, 3), np.uint8), [None] * 8, {names[0]: "no_face: test"})
    report = verify.new_report(four_pairs, lfw_root, settings, pairs, aligned)
    assert report["num_pairs"] == 4 and report["num_images"] == 8 and report["models"] == {}
    assert report["alignment"] == {
        "aligned": 7,
        "centre_crop_fallback": 1,
        "fallback_images": {names[0]: "no_face: test"},
    }
