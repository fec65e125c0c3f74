"""Export -> load round trips (image folder, CSV, JSONL) and clear errors for bad files."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsec.data import (
    CaptionDataset,
    ImageDecodeError,
    ImageFolderDataset,
    ShapesDataset,
    collate,
    export_shapes,
    load_dataset,
)
from mmsec.data.export import class_dir_name
from mmsec.data.shapes import shape_color_classes

N = 24


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small export with second objects (so captions carry the suffix) and its reference batch."""
    out = tmp_path_factory.mktemp("export") / "shapes"
    result = export_shapes(out, "test", n=N, image_size=32, seed=3, second_object_prob=0.5, quiet=True)
    ref = ShapesDataset("test", n=N, image_size=32, seed=3, second_object_prob=0.5).batch()
    return result, ref


def _copy_export(exported, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(exported[0].root, tmp_path / "copy"))


def test_export_layout(exported):
    result, ref = exported
    root = result.root
    assert (root / "captions.jsonl").is_file() and (root / "captions.csv").is_file()
    assert (root / "classes.txt").read_text().split() == [class_dir_name(c) for c in shape_color_classes()]
    assert json.loads((root / "export.json").read_text())["seed"] == 3
    pngs = sorted(root.rglob("*.png"))
    assert len(pngs) == N
    assert all(p.parent.name in result.class_dirs for p in pngs)
    assert "red_circle" in result.class_dirs
    assert not list(root.parent.glob(".shapes.*")), "temporary folders were left behind"
    first = json.loads((root / "captions.jsonl").read_text().splitlines()[0])
    assert not Path(first["image"]).is_absolute() and first["caption"] == ref.captions[0][0]


@pytest.mark.parametrize("name", ["captions.csv", "captions.jsonl"])
def test_caption_file_round_trip(exported, name):
    result, ref = exported
    ds = CaptionDataset(result.root / name, class_names=shape_color_classes())
    assert len(ds) == N
    data = ds.to_data(quiet=True)
    assert torch.equal(data.pixels, ref.pixels())  # bit-exact
    assert torch.equal(data.labels, ref.labels)
    assert data.captions == ref.captions and all(len(c) >= 5 for c in data.captions)
    assert data.class_names == shape_color_classes()
    item = ds[3]
    assert torch.equal(item["pixels"], ref.pixels()[3]) and item["label"] == ref.labels[3].item()
    assert item["captions"] == ref.captions[3]
    # Through the registry name, as experiment specs load it.
    spec = load_dataset("captions", path=str(result.root / name), image_size=32)
    assert torch.equal(spec.pixels, ref.pixels()) and torch.equal(spec.labels, ref.labels)
    assert spec.class_names is None and spec.captions == ref.captions


def test_image_folder_round_trip(exported):
    result, ref = exported
    ds = ImageFolderDataset(result.root)
    assert ds.classes == sorted(ds.classes) and len(ds) == N
    data = ds.to_data(quiet=True)
    assert data.captions is None and data.class_names == ds.classes
    for k, (path, label) in enumerate(ds.samples):
        i = int(path.stem)  # files are named by their index in the split
        assert torch.equal(data.pixels[k], ref.pixels()[i])
        assert ds.classes[label] == class_dir_name(shape_color_classes()[ref.labels[i]])
    # With the exported label order, labels are the shapes world's own.
    ordered = ImageFolderDataset(result.root, classes=(result.root / "classes.txt").read_text().split())
    idx = [int(p.stem) for p, _ in ordered.samples]
    assert [lab for _, lab in ordered.samples] == ref.labels[idx].tolist()
    spec = load_dataset("imagefolder", path=result.root, image_size=32)
    assert torch.equal(spec.pixels, data.pixels) and torch.equal(spec.labels, data.labels)
    batch = collate([ds[0], ds[1]])
    assert batch["pixels"].shape == (2, 3, 32, 32) and batch["captions"] is None


def test_resize(exported):
    result, _ = exported
    ds = ImageFolderDataset(result.root, image_size=48, as_tuple=True)
    pixels, label, caps = ds[0]
    assert pixels.shape == (3, 48, 48) and 0 <= pixels.min() and pixels.max() <= 1 and caps is None


def test_non_square_and_non_rgb_images(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((20, 40), 200, np.uint8), mode="L").save(tmp_path / "a" / "grey.png")
    Image.fromarray(np.zeros((30, 30, 4), np.uint8)).save(tmp_path / "a" / "rgba.png")
    ds = ImageFolderDataset(tmp_path, image_size=16)
    assert all(ds[i]["pixels"].shape == (3, 16, 16) for i in range(2))
    assert torch.allclose(ds[0]["pixels"], torch.full((3, 16, 16), 200 / 255))
    with pytest.raises(ValueError, match="differ in size.*pass image_size="):
        ImageFolderDataset(tmp_path).to_data(quiet=True)


def test_several_captions_per_image_and_string_labels(tmp_path):
    img = tmp_path / "imgs" / "x.png"
    img.parent.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    Image.fromarray(np.ones((8, 8, 3), np.uint8)).save(tmp_path / "y.png")
    (tmp_path / "c.csv").write_text(f"image,caption,label\nimgs/x.png,one,cat\ny.png,two,dog\n{img},three,cat\n")
    ds = CaptionDataset(tmp_path / "c.csv")
    assert len(ds) == 2 and ds.captions == [["one", "three"], ["two"]]
    assert ds.labels == [0, 1] and ds.class_names == ["cat", "dog"]
    lines = [{"image": "y.png", "caption": ["a", "b"]}, {"image": "imgs/x.png", "caption": "c"}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ds = CaptionDataset(tmp_path / "c.jsonl")
    assert ds.captions == [["a", "b"], ["c"]] and ds.labels is None
    assert collate([ds[0], ds[1]])["label"] is None


# ---------------------------------------------------------------------------------- errors
def test_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"image folder {tmp_path / 'nope'} does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=f"caption file {tmp_path / 'nope.csv'} does not exist"):
        CaptionDataset(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="unknown data set 'imagefolders'.*Did you mean 'imagefolder'"):
        load_dataset("imagefolders", path=tmp_path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_missing_image_names_file_and_line(exported, tmp_path, fmt):
    src = exported[0].root / f"captions.{fmt}"
    lines = src.read_text().splitlines()
    bad = 3  # 1-based line number to break (line 1 of the CSV is its header)
    lines[bad - 1] = lines[bad - 1].replace(".png", "_gone.png")
    gone = lines[bad - 1].split(",")[0] if fmt == "csv" else json.loads(lines[bad - 1])["image"]
    path = exported[0].root / f"broken.{fmt}"
    path.write_text("\n".join(lines) + "\n")
    try:
        with pytest.raises(FileNotFoundError, match=rf"broken\.{fmt}, line {bad}: image file .*{gone}.* not found"):
            CaptionDataset(path)
    finally:
        path.unlink()


def test_corrupt_image_is_named(exported, tmp_path):
    root = _copy_export(exported, tmp_path)
    victim = sorted(root.rglob("*.png"))[0]
    victim.write_bytes(b"this is not a png \x00\x01\x02" * 10)
    ds = ImageFolderDataset(root)
    k = [p for p, _ in ds.samples].index(victim)
    with pytest.raises(ImageDecodeError, match=f"image file {victim} could not be decoded"):
        ds[k]
    with pytest.raises(ImageDecodeError, match=f"{victim} could not be decoded"):
        ds.to_data(quiet=True)
    # A truncated PNG (valid header, cut short) too.
    victim.write_bytes((exported[0].root / victim.relative_to(root)).read_bytes()[:60])
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        ds[k]
    caps = CaptionDataset(root / "captions.csv")
    with pytest.raises(ImageDecodeError, match=rf"{victim} could not be decoded \(listed in .*captions\.csv, line \d+\)"):
        caps.to_data(quiet=True)


def test_missing_columns_and_keys(tmp_path):
    (tmp_path / "bad.csv").write_text("path,text\nx.png,hello\n")
    with pytest.raises(ValueError, match=r"bad\.csv lacks column\(s\) \['image', 'caption'\].*found \['path', 'text'\]"):
        CaptionDataset(tmp_path / "bad.csv")
    (tmp_path / "half.csv").write_text("image,label\nx.png,1\n")
    with pytest.raises(ValueError, match=r"half\.csv lacks column\(s\) \['caption'\]"):
        CaptionDataset(tmp_path / "half.csv")
    (tmp_path / "bad.jsonl").write_text('{"image": "x.png", "caption": "a"}\n{"img": "x.png", "caption": "b"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: missing key\(s\) \['image'\]"):
        CaptionDataset(tmp_path / "bad.jsonl")
    (tmp_path / "junk.jsonl").write_text('{"image": "x.png", "caption": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"junk\.jsonl, line 2: not valid JSON"):
        CaptionDataset(tmp_path / "junk.jsonl")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv is empty"):
        CaptionDataset(tmp_path / "empty.csv")
    (tmp_path / "caps.txt").write_text("x")
    with pytest.raises(ValueError, match=r"caps\.txt: cannot tell the format"):
        CaptionDataset(tmp_path / "caps.txt")


def test_conflicting_labels(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "c.csv").write_text("image,caption,label\nx.png,a,1\nx.png,b,2\n")
    with pytest.raises(ValueError, match=r"c\.csv, line 3: label '2' for x\.png conflicts with the label on line 2"):
        CaptionDataset(tmp_path / "c.csv")


def test_empty_folders(tmp_path):
    with pytest.raises(ValueError, match=f"image folder {tmp_path} has no class sub-folders"):
        ImageFolderDataset(tmp_path)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "loose.png")
    with pytest.raises(ValueError, match="has no class sub-folders; it holds 1 image file"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"holds no image files in its class sub-folders \['cats'\]"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "dogs").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "dogs" / "d.png")
    with pytest.raises(ValueError, match=r"class sub-folder\(s\) \['cats'\] hold no image files"):
        ImageFolderDataset(tmp_path)
    ds = ImageFolderDataset(tmp_path, classes=["dogs", "cats", "birds"])  # explicit classes may be empty
    assert ds.samples == [(tmp_path / "dogs" / "d.png", 0)]


def test_export_refuses_to_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # an existing empty folder is fine
    export_shapes(out, "val", n=3, quiet=True)
    with pytest.raises(FileExistsError, match=f"export destination {out} is not empty.*overwrite=True"):
        export_shapes(out, "val", n=3, quiet=True)
    (out / "stale.txt").write_text("from an older export")
    export_shapes(out, "train", n=2, quiet=True, overwrite=True)
    assert not (out / "stale.txt").exists() and len(list(out.rglob("*.png"))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "temporary folders were left behind"
    with pytest.raises(ValueError, match="fmt must be one of"):
        export_shapes(tmp_path / "other", "val", n=3, fmt="tfrecord")
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        export_shapes(tmp_path / "other", "val", n=0)
    with pytest.raises(ValueError, match="split must be one of"):
        export_shapes(tmp_path / "other", "holdout", n=3)
    assert not (tmp_path / "other").exists()


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    out = tmp_path / "out"
    export_shapes(out, "val", n=3, quiet=True)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    calls = []

    def failing_save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    original = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_shapes(out, "train", n=5, quiet=True, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        export_shapes(tmp_path / "new", "train", n=5, quiet=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the old export is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
