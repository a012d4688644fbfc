"""Tests for :mod:`augmentor.datasets.adapters` on small temporary trees (no real data)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from augmentor.datasets import adapters as datasets
from augmentor.datasets.adapters import (
    DATASETS,
    DatasetError,
    as_arrow,
    list_datasets,
    load_dataset,
    load_dataset_arrow,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8fake")
    return path


def check_table(df: pd.DataFrame, missing: int = 0) -> None:
    """Invariants every adapter must satisfy; ``missing``: listed files expected not on disk."""
    assert list(df.columns[:3]) == ["image_id", "identity", "path"]
    assert len(df) > 0
    assert df["image_id"].is_unique
    for column in ("image_id", "identity", "path"):
        assert all(isinstance(v, str) for v in df[column]), column
    assert all(Path(p).is_absolute() for p in df["path"])
    assert sum(not Path(p).is_file() for p in df["path"]) == missing
    assert df.index.equals(pd.RangeIndex(len(df)))
    order = sorted(zip(df["identity"], df["image_id"]))
    assert list(zip(df["identity"], df["image_id"])) == order


def make_two_level(root: Path, layout: dict[str, list[str]]) -> None:
    for identity, files in layout.items():
        for name in files:
            touch(root / identity / name)


def make_celeba(root: Path, header: str | None = None, listed_missing: bool = False) -> Path:
    for name in ("000001.jpg", "000002.jpg", "000003.jpg"):
        touch(root / "img_align_celeba" / name)
    lines = ["000001.jpg 2880", "000002.jpg 2880", "000003.jpg 17"]
    if listed_missing:
        lines.append("000004.jpg 17")
    if header is not None:
        lines.insert(0, header)
    (root / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    return root


# One small valid tree per adapter; the registry test below fails if an adapter is added without one.
def _casia(tmp: Path) -> Path:
    make_two_level(tmp / "casia", {"0000045": ["001.jpg", "002.jpg"], "0000099": ["001.jpg"]})
    return tmp / "casia"


def _lfw(tmp: Path) -> Path:
    make_two_level(tmp / "lfw", {"Ann_Lee": ["Ann_Lee_0001.jpg", "Ann_Lee_0002.jpg"], "Bo_Xu": ["Bo_Xu_0001.jpg"]})
    return tmp / "lfw"


def _folder(tmp: Path) -> Path:
    touch(tmp / "tree" / "a" / "x.png")
    touch(tmp / "tree" / "b" / "c" / "y.JPG")
    return tmp / "tree"


def _list(tmp: Path) -> Path:
    touch(tmp / "img" / "a.jpg")
    (tmp / "list.tsv").write_text("path\tidentity\nimg/a.jpg\t1\n")
    return tmp / "list.tsv"


VALID_TREES = {"casia": _casia, "lfw": _lfw, "folder": _folder, "list": _list, "celeba": make_celeba}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_registered_adapter_produces_required_columns(tmp_path: Path, name: str) -> None:
    assert name in VALID_TREES, f"add a test tree for new adapter {name!r}"
    df = load_dataset(name, VALID_TREES[name](tmp_path))
    check_table(df)
    table = as_arrow(df)
    assert isinstance(table, pa.Table)
    assert table.column_names[:3] == ["image_id", "identity", "path"]
    assert table.num_rows == len(df)


def test_list_datasets_is_sorted_registry() -> None:
    assert list_datasets() == sorted(DATASETS)
    assert {"casia", "lfw", "celeba", "folder", "list"} <= set(list_datasets())


def test_casia_keeps_leading_zeros(tmp_path: Path) -> None:
    root = _casia(tmp_path)
    touch(root / "stray.jpg")  # not in an identity folder: ignored
    touch(root / "0000045" / "notes.txt")
    df = load_dataset("casia", root)
    check_table(df)
    assert df["identity"].tolist() == ["0000045", "0000045", "0000099"]
    assert df["image_id"].tolist() == ["0000045/001", "0000045/002", "0000099/001"]
    assert df["path"].tolist() == [str(root / f"{i}.jpg") for i in df["image_id"]]


def test_lfw_rows(tmp_path: Path) -> None:
    df = load_dataset("lfw", _lfw(tmp_path))
    check_table(df)
    assert df["identity"].tolist() == ["Ann_Lee", "Ann_Lee", "Bo_Xu"]
    assert df["image_id"].tolist() == ["Ann_Lee/Ann_Lee_0001", "Ann_Lee/Ann_Lee_0002", "Bo_Xu/Bo_Xu_0001"]


def test_hidden_files_and_dirs_and_non_images_skipped(tmp_path: Path) -> None:
    root = _lfw(tmp_path)
    touch(root / "Ann_Lee" / ".Ann_Lee_0003.jpg")
    touch(root / ".hidden" / "x.jpg")
    touch(root / "Bo_Xu" / "readme.txt")
    touch(root / "Bo_Xu" / "thumbs.db")
    for name in ("lfw", "folder"):
        df = load_dataset(name, root)
        assert len(df) == 3, name
        assert not any(".hidden" in i or "/." in i for i in df["image_id"])


def test_folder_identity_is_immediate_parent(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    touch(root / "top.webp")
    touch(root / ".git" / "z.jpg")
    df = load_dataset("folder", root)
    check_table(df)
    assert dict(zip(df["image_id"], df["identity"])) == {"a/x": "a", "b/c/y": "c", "top": "tree"}


def test_extensions_case_insensitive_and_stem_clash(tmp_path: Path) -> None:
    for name in ("a.JPEG", "b.Png", "c.bmp", "d.TIF", "e.tiff", "f.webp", "g.gif", "a.jpg"):
        touch(tmp_path / "root" / "id" / name)
    df = load_dataset("folder", tmp_path / "root")
    check_table(df)
    assert sorted(df["image_id"]) == ["id/a.JPEG", "id/a.jpg", "id/b", "id/c", "id/d", "id/e", "id/f"]


@pytest.mark.parametrize("header", [None, "image_id identity", "202599"])
def test_celeba_with_and_without_header(tmp_path: Path, header: str | None) -> None:
    df = load_dataset("celeba", make_celeba(tmp_path, header=header))
    check_table(df)
    assert df["identity"].tolist() == ["17", "2880", "2880"]
    assert df["image_id"].tolist() == ["000003", "000001", "000002"]
    assert all(Path(p).parent.name == "img_align_celeba" for p in df["path"])


def test_celeba_missing_files_skipped_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="augmentor.datasets.adapters"):
        df = load_dataset("celeba", make_celeba(tmp_path, listed_missing=True))
    assert len(df) == 3
    assert "000004" not in df["image_id"].tolist()
    assert any("1 of 4" in r.getMessage() for r in caplog.records)


def test_celeba_root_variants(tmp_path: Path) -> None:
    root = make_celeba(tmp_path / "celeba")
    expected = load_dataset("celeba", root)
    # Root is the image folder, the txt in its parent.
    pd.testing.assert_frame_equal(load_dataset("celeba", root / "img_align_celeba"), expected)
    # Root is the txt file itself.
    pd.testing.assert_frame_equal(load_dataset("celeba", root / "identity_CelebA.txt"), expected)
    # Explicit identities= path elsewhere, image folder named images/.
    other = tmp_path / "other"
    other.mkdir()
    (root / "img_align_celeba").rename(other / "images")
    txt = (root / "identity_CelebA.txt").rename(tmp_path / "ids.txt")
    df = load_dataset("celeba", other, identities=txt)
    assert df["image_id"].tolist() == expected["image_id"].tolist()
    assert all(Path(p).parent == other / "images" for p in df["path"])


def test_celeba_errors(tmp_path: Path) -> None:
    touch(tmp_path / "images" / "000001.jpg")
    with pytest.raises(DatasetError, match="identity_CelebA.txt"):
        load_dataset("celeba", tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("celeba", tmp_path, identities=tmp_path / "nope.txt")
    (tmp_path / "identity_CelebA.txt").write_text("000001.jpg 1\nthis is garbage\n")
    with pytest.raises(DatasetError, match=":2:"):
        load_dataset("celeba", tmp_path)


def _write_list(path: Path, frame: pd.DataFrame) -> None:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)


@pytest.mark.parametrize("ext", [".tsv", ".csv", ".parquet"])
def test_list_formats_relative_absolute_and_extra_columns(
    tmp_path: Path, ext: str, caplog: pytest.LogCaptureFixture
) -> None:
    touch(tmp_path / "data" / "images" / "000114.jpg")
    touch(tmp_path / "data" / "images-padded" / "000114.jpg")
    outside = touch(tmp_path / "elsewhere" / "z.png")
    frame = pd.DataFrame(
        {
            "path": ["images/000114.jpg", "images-padded/000114.jpg", str(outside), "images/missing.jpg"],
            "identity": ["0007256", "0007256", "42", "1"],
            "padded_fraction": [0.0, 0.087, 0.5, 0.0],
        }
    )
    _write_list(tmp_path / "data" / f"identities{ext}", frame)
    with caplog.at_level(logging.WARNING, logger="augmentor.datasets.adapters"):
        df = load_dataset("list", tmp_path / "data" / f"identities{ext}")
    check_table(df, missing=1)
    assert list(df.columns) == ["image_id", "identity", "path", "padded_fraction"]
    # Leading zeros kept; the missing file kept too, so that augmentor run accounts for it (status missing).
    assert df["identity"].tolist() == ["0007256", "0007256", "1", "42"]
    assert "1 of 4 file(s) listed" in caplog.text and "status missing" in caplog.text
    assert df["image_id"].tolist()[:3] == ["images-padded/000114", "images/000114", "images/missing"]
    assert df["path"].iloc[3] == str(outside)
    assert pd.api.types.is_float_dtype(df["padded_fraction"])
    assert df["padded_fraction"].tolist() == [0.087, 0.0, 0.0, 0.5]


def test_list_numeric_identity_in_parquet_becomes_string(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    pd.DataFrame({"path": ["a.jpg"], "identity": [7256]}).to_parquet(tmp_path / "l.parquet")
    assert load_dataset("list", tmp_path / "l.parquet")["identity"].tolist() == ["7256"]


def test_list_custom_columns_and_format(tmp_path: Path) -> None:
    touch(tmp_path / "x" / "a.jpg")
    (tmp_path / "faces.txt").write_text("file;who\n")  # wrong format on purpose, then a proper one
    (tmp_path / "faces.dat").write_text("file,who\nx/a.jpg,007\n")
    df = load_dataset("list", tmp_path / "faces.dat", path_column="file", identity_column="who", format="csv")
    assert df[["image_id", "identity"]].values.tolist() == [["x/a", "007"]]
    with pytest.raises(DatasetError, match="format"):
        load_dataset("list", tmp_path / "faces.txt")


def test_list_missing_column_error(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("file,identity\na.jpg,1\n")
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['path'\].*'file'"):
        load_dataset("list", tmp_path / "l.csv")


def test_list_root_must_be_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="must be a file"):
        load_dataset("list", tmp_path)


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("imagenet", tmp_path)
    for name in list_datasets():
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_name_is_case_insensitive(tmp_path: Path) -> None:
    assert len(load_dataset("LFW", _lfw(tmp_path))) == 3


@pytest.mark.parametrize("name", ["casia", "lfw", "folder", "celeba", "list"])
def test_missing_root_error(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(DatasetError, match="does not exist") as info:
        load_dataset(name, missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("name", ["casia", "lfw", "folder"])
def test_empty_dataset_error(tmp_path: Path, name: str) -> None:
    touch(tmp_path / "person" / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        load_dataset(name, tmp_path)


def test_unknown_option_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="limit"):
        load_dataset("lfw", _lfw(tmp_path), limit=3)


def test_root_must_be_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset("casia", touch(tmp_path / "a.jpg"))


def test_load_dataset_arrow_and_str_root(tmp_path: Path) -> None:
    table = load_dataset_arrow("casia", str(_casia(tmp_path)))
    assert table.num_rows == 3
    assert table.column("identity").to_pylist() == ["0000045", "0000045", "0000099"]


def test_register_rejects_duplicates_and_adds_adapters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "DATASETS", dict(DATASETS))
    with pytest.raises(ValueError, match="already registered"):
        datasets.register("lfw")(lambda root: None)

    @datasets.register("single")
    def single(root: Path) -> pd.DataFrame:
        return pd.DataFrame({"image_id": ["b", "a"], "identity": [2, 1], "path": [str(root / "b"), str(root / "a")]})

    df = datasets.load_dataset("single", tmp_path)
    assert df["identity"].tolist() == ["1", "2"]
    assert "single" in datasets.list_datasets()


def test_list_identity_na_token_kept(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "b.jpg")
    (tmp_path / "l.csv").write_text("path,identity,score\na.jpg,NA,\nb.jpg,,1.5\n")
    df = load_dataset("list", tmp_path / "l.csv")
    assert df["identity"].tolist() == ["NA"]  # the row with an empty identity is skipped
    assert pd.isna(df["score"].iloc[0])


def test_an_unlistable_folder_is_an_error_not_missing_files(tmp_path, monkeypatch):
    """Bug: a scandir OSError made every file of the folder "missing", recorded so for good."""
    import os

    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.jpg").write_bytes(b"x")
    (tmp_path / "locked").mkdir()
    real = os.scandir

    def scandir(path):
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    paths = [str(tmp_path / "ok" / "a.jpg"), str(tmp_path / "ok" / "b.jpg"), str(tmp_path / "gone" / "c.jpg")]
    assert datasets.files_exist(paths) == [True, False, False]  # a folder that is not there holds no file
    with pytest.raises(datasets.DatasetError, match=r"cannot list .*locked \(Permission denied\)"):
        datasets.files_exist([str(tmp_path / "locked" / "d.jpg")])
