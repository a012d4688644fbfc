"""The CPU training path of issue 15: pixels beyond the photo's edge, bf16 autocast, noise channels grown on a
deterministic model, the adversarial bookkeeping and the validation realism scores."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from augmentor.models import Cascade, CascadeConfig
from augmentor.precision import native_bf16
from augmentor.preprocessing.preprocess import preprocess
from augmentor.preprocessing.shards import decode_valid, read_shards
from augmentor.training.checkpoints import save_generator
from augmentor.training.data import DataConfig, FaceSet, load_faces
from augmentor.training.loop import Trainer, train


@pytest.fixture(scope="module")
def tight_shards(tmp_path_factory, lfw_images):
    """Three LFW fixtures cropped tight (150 px around the centre), so the 128 px window runs past the edge."""
    root = tmp_path_factory.mktemp("tight")
    rows = []
    for path in lfw_images[:3]:
        crop = root / path.name
        Image.open(path).crop((50, 50, 200, 200)).save(crop)
        rows.append({"image_id": f"tight-{path.stem}", "identity": path.stem, "path": str(crop)})
    out = root / "shards"
    preprocess(pd.DataFrame(rows), out, workers=1, progress=False)
    return out


def test_preprocess_records_which_pixels_lie_beyond_the_photo(tight_shards, face_shards):
    table = read_shards(tight_shards, status="ok")
    assert table.num_rows == 3
    for stored, border in zip(table["valid"].to_pylist(), table["border_fraction"].to_pylist(), strict=True):
        assert stored is not None and border > 0.02
        valid = decode_valid(stored, 128)
        assert valid.mean() == pytest.approx(1 - border, abs=1e-6)
        assert valid[60:68, 60:68].all()  # the face centre is inside the photo
        assert not valid[[0, -1], :].all() or not valid[:, [0, -1]].all()  # some edge is not
    wide = read_shards(face_shards, status="ok")
    assert all(v is None for v in wide["valid"].to_pylist())  # LFW's own framing: every pixel inside
    faces = load_faces(DataConfig(path=str(tight_shards), extra_paths=(str(face_shards),)))
    assert len(faces) == 13 and faces.valid.shape == (13, 1, 128, 128)
    assert faces.valid[:3].float().mean() < 1 and faces.valid[3:].all()
    with pytest.raises(ValueError, match="collide"):
        load_faces(DataConfig(path=str(face_shards), extra_paths=(str(face_shards),)))


def test_inside_photo_keeps_the_faces_with_every_pixel_valid():
    images, masks = torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.ones(3, 1, 8, 8, dtype=torch.uint8)
    valid = torch.ones(3, 1, 8, 8, dtype=torch.uint8)
    valid[1, 0, 7, 0] = 0  # one pixel of face 1 lies beyond the photo's edge
    ids = ["a", "b", "c"]
    assert FaceSet(images, masks, ids, ids, "x", valid).inside_photo().tolist() == [0, 2]
    assert FaceSet(images, masks, ids, ids, "x").inside_photo().tolist() == [0, 1, 2]  # no mask stored: all valid


def test_validation_ignores_what_lies_beyond_the_edge(tiny_config, tmp_path):
    base = load_faces(tiny_config.data)
    valid = torch.ones_like(base.masks)
    valid[..., :, :20] = 0  # a strip on the left lay outside the photo
    scores = []
    for fill in (0, 255):
        images = base.images.clone()
        images[..., :, :20] = fill
        faces = FaceSet(images, base.masks, base.identities, base.image_ids, "x", valid)
        torch.manual_seed(0)
        trainer = Trainer(tiny_config, tmp_path / f"fill{fill}", faces)
        scores.append(trainer.validate(128))
    assert scores[0].keys() == scores[1].keys() and "l1_128" in scores[0]
    for key in scores[0]:
        assert scores[0][key] == pytest.approx(scores[1][key], rel=1e-5, abs=1e-7), key


def test_bf16_cpu_path_keeps_losses_in_fp32(tiny_config, tmp_path):
    torch.manual_seed(0)
    fp32 = Trainer(dataclasses.replace(tiny_config, bf16=False), tmp_path / "a")
    torch.manual_seed(0)
    mixed = Trainer(tiny_config, tmp_path / "b")
    assert mixed.bf16 == native_bf16("cpu") and not fp32.bf16
    if not mixed.bf16:
        pytest.skip("this CPU has no native bf16: the trainer stays in fp32")
    mixed.generator.load_state_dict(fp32.generator.state_dict())
    mixed.discriminators.load_state_dict(fp32.discriminators.state_dict())
    images, masks = fp32.train_images[:4], fp32.train_masks[:4]
    logs = [t.train_step(images, masks, 128, 1.0, torch.Generator().manual_seed(0)) for t in (fp32, mixed)]
    for key, value in logs[1].items():
        assert value.dtype == torch.float32 and torch.isfinite(value), key
    # The first step sees the same weights: bf16 networks move the losses by about 1%, no more.
    for key in ("l1_128", "l1_32", "tv_128"):
        assert float(logs[1][key]) == pytest.approx(float(logs[0][key]), rel=0.03), key


def test_noise_channels_grown_on_a_deterministic_model_start_from_its_outputs(tiny_config, tmp_path):
    torch.manual_seed(0)
    plain = Cascade(tiny_config.model)
    save_generator(plain, tmp_path / "plain", {})
    grown_cfg = dataclasses.replace(
        tiny_config,
        model=dataclasses.replace(tiny_config.model, noise_channels=2),
        init_from=str(tmp_path / "plain"),
        epochs=1,
        max_steps_per_epoch=1,
    )
    trainer = Trainer(grown_cfg, tmp_path / "run")
    trainer.load_init(tmp_path / "plain")
    from augmentor.models import input_pyramid

    image = torch.rand(2, 3, 128, 128) * 2 - 1
    mask = torch.zeros(2, 1, 128, 128)
    mask[..., 40:90, 40:90] = 1
    levels = input_pyramid(image * mask, mask, tiny_config.model.resolutions)
    with torch.no_grad():
        expected = plain(levels)[128]
        got = trainer.generator.float()(levels, generator=torch.Generator().manual_seed(3))[128]
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="init_from"):  # without noise channels a shape mismatch stays an error
        wider = CascadeConfig(widths={k: 16 for k in tiny_config.model.widths}, d_widths=tiny_config.model.d_widths)
        Trainer(dataclasses.replace(tiny_config, model=wider), tmp_path / "w").load_init(tmp_path / "plain")


def test_gan_run_logs_the_game_and_validation_realism(tiny_config, tmp_path):
    cfg = dataclasses.replace(
        tiny_config,
        model=dataclasses.replace(tiny_config.model, noise_channels=1),
        loss=dataclasses.replace(
            tiny_config.loss,
            adversarial_from=64,
            diffaugment="color,translation,cutout",
            diversity=0.1,
            r1=1.0,
            r1_every=1,
        ),
        data=dataclasses.replace(tiny_config.data, val_fraction=0.85),
        batch_size=2,  # the mode-seeking pair
        epochs=1,
        log_every=1,
        keep_every=1,
    )
    train(cfg, tmp_path / "run")
    import json

    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_logs = line["train"]
    for r in (64, 128):
        assert {f"d_real_{r}", f"d_fake_{r}", f"adv_grad_{r}", f"adv_{r}"} <= set(train_logs)
        assert train_logs[f"adv_grad_{r}"] > 0
    assert not any(k.endswith("_32") and k.startswith(("d_", "adv")) for k in train_logs)  # no D below 64
    assert "r1" in train_logs and "ms" in train_logs
    quality = line["quality"]
    assert quality["num_faces"] >= 8 and 0 < quality["ssim"] < 1
    assert {"swd_128", "swd_64", "swd_32", "swd_16"} <= set(quality) and all(
        np.isfinite(quality[k]) and quality[k] > 0 for k in quality if k.startswith("swd_")
    )
    assert (tmp_path / "run" / "gan_curves.png").stat().st_size > 5000
    assert (tmp_path / "run" / "epochs" / "epoch_0001" / "config.json").is_file()
