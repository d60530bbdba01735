"""Dataset yaml loading, image listing, label paths and label validation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_detect.datasets import label_path, list_images, load_dataset, load_labels, parse_labels
from edge_detect.errors import DataError


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path):
    """root/images/{a,b}/*.jpg|png plus labels, a list file and a non-image file."""
    root = tmp_path / "data"
    for rel in ("images/a/1.jpg", "images/a/2.PNG", "images/a/sub/3.jpg", "images/b/4.jpg"):
        _touch(root / rel)
    _touch(root / "images/a/notes.md")
    _touch(root / "labels/a/1.txt", b"0 0.5 0.5 0.2 0.2\n\n1 0.1 0.1 0.1 0.1\n")
    (root / "list.txt").write_text("./images/b/4.jpg\nimages/a/1.jpg\n\n")
    return root


def test_coco128_yaml(coco128):
    spec = load_dataset(coco128 / "coco128.yaml")
    assert spec.nc == 80 and spec.names[0] == "person" and spec.names[79] == "toothbrush"
    assert spec.root == coco128.resolve()
    assert spec.splits["val"] == (coco128.resolve() / "images" / "val2017",)
    files = spec.images("val")
    assert len(files) == 128 and files == sorted(files)
    labels = load_labels(files, spec.nc)
    assert sum(len(x) for x in labels) == 898
    assert all(x.dtype == np.float32 and x.shape[1] == 5 for x in labels)


def test_relative_paths_list_files_and_list_of_dirs(tree):
    yaml_dir = tree.parent / "cfg"
    yaml_dir.mkdir()
    (yaml_dir / "d.yaml").write_text(
        "path: ../data\ntrain: [images/a, images/b]\nval: list.txt\nnames: [cat, dog]\n")
    spec = load_dataset(yaml_dir / "d.yaml")
    assert spec.root == tree.resolve() and spec.names == ("cat", "dog")
    assert [p.name for p in spec.images("train")] == ["1.jpg", "2.PNG", "3.jpg", "4.jpg"]
    assert [p.relative_to(tree).as_posix() for p in spec.images("val")] == ["images/a/1.jpg", "images/b/4.jpg"]
    with pytest.raises(DataError, match="split 'test' not defined"):
        spec.images("test")


def test_names_as_mapping_and_absolute_path(tree, tmp_path):
    (tmp_path / "d.yaml").write_text(f"path: {tree}\nval: images/a\nnames: {{1: dog, 0: cat}}\n")
    spec = load_dataset(tmp_path / "d.yaml")
    assert spec.names == ("cat", "dog") and len(spec.images("val")) == 3


def test_list_images_sources(tree):
    assert len(list_images(tree / "images")) == 4
    assert [p.name for p in list_images(str(tree / "images" / "*" / "*.jpg"))] == ["1.jpg", "4.jpg"]
    assert list_images(tree / "images/a/1.jpg") == [tree / "images/a/1.jpg"]
    assert len(list_images([tree / "images/a", tree / "images/a/1.jpg"])) == 3  # de-duplicated
    with pytest.raises(DataError, match="image source not found: .*nowhere"):
        list_images(tree / "nowhere")


@pytest.mark.parametrize("image, label", [
    ("/d/images/train/x.jpg", "/d/labels/train/x.txt"),
    ("/images/d/images/val/y.v1.png", "/images/d/labels/val/y.v1.txt"),   # last 'images' only
    ("/d/pics/z.jpg", "/d/pics/z.txt"),
])
def test_label_path(image, label):
    assert label_path(image) == Path(label)


def test_parse_labels(tree, tmp_path):
    rows = parse_labels(tree / "labels/a/1.txt", nc=2)
    np.testing.assert_allclose(rows, [[0, 0.5, 0.5, 0.2, 0.2], [1, 0.1, 0.1, 0.1, 0.1]])
    assert parse_labels(tree / "labels/a/missing.txt").shape == (0, 5)
    poly = _touch(tmp_path / "p.txt", b"3 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n")
    np.testing.assert_allclose(parse_labels(poly, nc=4), [[3, 0.3, 0.4, 0.4, 0.4]], atol=1e-6)
    assert load_labels([tree / "images/a/1.jpg", tree / "images/b/4.jpg"], 2)[1].shape == (0, 5)


@pytest.mark.parametrize("text, message", [
    ("0 0.5 0.5 0.2 0.2\n80 0.5 0.5 0.1 0.1\n", "bad.txt:2: class: expected an integer in 0..79, got 80"),
    ("-1 0.5 0.5 0.2 0.2\n", "bad.txt:1: class: expected an integer in 0..79, got -1"),
    ("1.5 0.5 0.5 0.2 0.2\n", "bad.txt:1: class: expected an integer in 0..79, got 1.5"),
    ("0 0.5 0.5 0.2\n", "bad.txt:1: expected 5 values 'class cx cy w h' (or class + polygon x y pairs), got 4"),
    ("0 0.5 0.5 0.2 0.2 0.3\n", "got 6"),
    ("0 a 0.5 0.2 0.2\n", "bad.txt:1: expected numbers 'class cx cy w h', got '0 a 0.5 0.2 0.2'"),
    ("\n\n0 0.5 1.5 0.2 0.2\n", "bad.txt:3: coordinates: expected normalized values in [0, 1]"),
    ("0 0.5 0.5 -0.2 0.2\n", "bad.txt:1: coordinates"),
], ids=["class-too-big", "class-negative", "class-float", "4-values", "6-values", "not-a-number",
        "coord-above-1", "negative-size"])
def test_bad_labels(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        parse_labels(path, nc=80)
    assert message in str(err.value)


@pytest.mark.parametrize("yaml_text, message", [
    ("path: .\nval: images/missing\nnames: [a]\n", "image source not found: "),
    ("path: .\nnames: [a]\n", "expected at least one of ('train', 'val', 'test')"),
    ("path: .\nval: images\n", "missing 'names'"),
    ("path: .\nval: images\nnames: {0: a, 2: b}\n", "expected class ids 0..1 without gaps, got [0, 2]"),
    ("path: .\nval: images\nnames: []\n", "names: expected a non-empty list"),
    ("path: .\nval: 3\nnames: [a]\n", "val: expected a path or a list of paths, got 3"),
    ("- just\n- a list\n", "expected a mapping with path/train/val/names, got list"),
    ("val: [unclosed\n", "invalid YAML"),
], ids=["missing-folder", "no-split", "no-names", "names-gap", "names-empty", "bad-split", "not-mapping",
        "bad-yaml"])
def test_bad_dataset_yaml(tmp_path, yaml_text, message):
    (tmp_path / "d.yaml").write_text(yaml_text)
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "d.yaml").images("val")
    assert message in str(err.value)
    if "not found" in message:
        assert str(tmp_path / "images" / "missing") in str(err.value)


def test_missing_yaml(tmp_path):
    with pytest.raises(DataError, match="dataset yaml not found: .*nope.yaml"):
        load_dataset(tmp_path / "nope.yaml")
