"""data_tools clean, dedupe and split on a generated dataset with planted duplicates and bad files."""

import io
import os
import struct
import zlib
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from data_tools.clean import clean
from data_tools.dedupe import close_pairs, duplicate_groups
from data_tools.images import crop_uniform_borders, load_clean
from data_tools.manifest import read_manifest
from data_tools.split import assign_splits, split
from data_tools.synthetic import scene

CLASSES = ("berlin", "paris", "rome")


def _jpeg(image: Image.Image, path, quality=90, **kwargs):
    image.save(path, "JPEG", quality=quality, **kwargs)


def _bomb_png(path, side=16000):
    """A real PNG whose header claims side x side pixels (all black), compressed to a few hundred KB."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\0" * (side // 8 + 1)  # 1-bit rows with their filter byte
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", body))
        f.write(chunk(b"IEND", b""))


def _make_dataset(root):
    """20 distinct scenes per class, planted near-duplicates, bad files and files that need converting."""
    truth = {"distinct": set(), "duplicates": set(), "bad": {}, "convert": set()}
    rng = np.random.default_rng(0)
    seed = 0
    for label in CLASSES:
        os.makedirs(root / label)
        for k in range(20):
            seed += 1
            rel = f"{label}/{k:06d}.jpg"
            _jpeg(Image.fromarray(scene(seed)), root / rel)
            truth["distinct"].add(rel)
    originals = sorted(truth["distinct"])
    for n, source in enumerate(rng.choice(originals, 12, replace=False)):
        image = Image.open(root / source).convert("RGB")
        label = source.split("/")[0]
        copies = {
            "reencoded": lambda im: im,
            "resized": lambda im: im.resize((154, 154)),
            "cropped": lambda im: im.crop((3, 3, 253, 253)),
        }
        for kind, make in copies.items():
            target = label if not (kind == "resized" and n % 4 == 0) else CLASSES[(CLASSES.index(label) + 1) % 3]
            rel = f"{target}/zz_{kind}_{n}.jpg"
            _jpeg(make(image), root / rel, quality=55)
            truth["duplicates"].add(rel)
    # bad files, each with the kind of reason it must get
    (root / "berlin/truncated.jpg").write_bytes((root / originals[0]).read_bytes()[:3000])
    (root / "paris/page.jpg").write_bytes(b"<html><body>Not found</body></html>")
    _jpeg(Image.fromarray(scene(900, 40)), root / "rome/small.jpg")
    _jpeg(Image.fromarray(scene(901, (150, 600))), root / "rome/banner.jpg")
    _bomb_png(root / "berlin/bomb.png")
    (root / "paris/empty.jpg").write_bytes(b"")
    truth["bad"] = {
        "berlin/truncated.jpg": "truncated or corrupt",
        "paris/page.jpg": "not an image",
        "rome/small.jpg": "too small",
        "rome/banner.jpg": "extreme aspect ratio",
        "berlin/bomb.png": "decompression bomb",
        "paris/empty.jpg": "not an image",
    }
    # kept, but converted to RGB JPEG
    base = scene(950, (200, 300))
    Image.fromarray(base).convert("CMYK").save(root / "berlin/cmyk.jpg", "JPEG")
    Image.fromarray(scene(951)).convert("L").save(root / "paris/grey.png")
    Image.fromarray(scene(952)).convert("P", palette=Image.ADAPTIVE).save(root / "rome/palette.gif")
    rgba = Image.fromarray(scene(953)).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "rome/alpha.png")
    Image.fromarray(scene(954)[..., 0].astype("uint16") * 257).save(root / "paris/deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    _jpeg(Image.fromarray(scene(955, (200, 300))), root / "berlin/rotated.jpg", exif=exif.tobytes())
    framed = np.full((300, 300, 3), 255, np.uint8)
    framed[30:270, 20:280] = scene(956, (240, 260))
    _jpeg(Image.fromarray(framed), root / "rome/framed.jpg", quality=95)
    truth["convert"] = {
        "berlin/cmyk.jpg",
        "paris/grey.png",
        "rome/palette.gif",
        "rome/alpha.png",
        "paris/deep.png",
        "berlin/rotated.jpg",
        "rome/framed.jpg",
    }
    truth["distinct"] |= truth["convert"]
    return truth


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "streets"
    truth = _make_dataset(root)
    report = clean(str(root), progress=False)
    return root, truth, report


def test_every_planted_duplicate_and_bad_file_is_found(cleaned):
    root, truth, report = cleaned
    records = read_manifest(str(root))
    by_status = {}
    for record in records.values():
        by_status.setdefault(record["status"], set()).add(record["path"])
    flagged_duplicates = by_status.get("duplicate", set())
    found = flagged_duplicates & truth["duplicates"]
    precision = len(found) / max(len(flagged_duplicates), 1)
    recall = len(found) / len(truth["duplicates"])
    planted = len(truth["duplicates"])
    print(f"\nnear-duplicates: precision {precision:.3f}, recall {recall:.3f} ({len(found)}/{planted})")
    assert recall == 1.0 and precision == 1.0
    for path, reason in truth["bad"].items():
        assert records[path]["status"] == "rejected" and records[path]["reason"].startswith(reason), records[path]
        assert not (root / path).exists() and (root / records[path]["quarantine"]).exists()
    # no distinct image lost: every one is kept (under its own name, or as the converted .jpg)
    kept = by_status["ok"]
    for rel in truth["distinct"]:
        assert rel in kept or os.path.splitext(rel)[0] + ".jpg" in kept, rel
    assert report.kept == len(truth["distinct"]) and report.duplicates == len(truth["duplicates"])
    assert report.rejected == len(truth["bad"])


def test_kept_files_are_rgb_and_converted_as_recorded(cleaned):
    root, truth, _ = cleaned
    records = read_manifest(str(root))
    for record in records.values():
        if record["status"] != "ok":
            continue
        with Image.open(root / record["path"]) as image:
            assert image.mode == "RGB" and image.size == (record["width"], record["height"])
    converted = {r["path"]: r for r in records.values() if r.get("converted")}
    assert {os.path.splitext(p)[0] for p in converted} == {os.path.splitext(p)[0] for p in truth["convert"]}
    assert records["berlin/rotated.jpg"]["width"] == 200  # EXIF orientation applied: portrait
    framed = records["rome/framed.jpg"]  # the white frame is cropped (JPEG ringing may keep a pixel)
    assert abs(framed["width"] - 260) <= 2 and abs(framed["height"] - 240) <= 2
    for record in converted.values():  # the originals are kept in quarantine, not deleted
        assert (root / record["original"]).exists()


def test_clean_again_changes_nothing_and_writes_only_inside_root(cleaned):
    root, _, _ = cleaned
    before = sorted(p.relative_to(root.parent) for p in root.parent.rglob("*"))
    records = read_manifest(str(root))
    report = clean(str(root), progress=False)
    assert report.rejected == 0 and report.duplicates == 0 and report.converted == 0
    after = sorted(p.relative_to(root.parent) for p in root.parent.rglob("*"))
    assert after == before
    assert {k: v["status"] for k, v in read_manifest(str(root)).items()} == {k: v["status"] for k, v in records.items()}
    assert all(str(p).startswith("streets") for p in after)
    assert not [p for p in root.rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_split_is_stratified_and_keeps_groups_together(cleaned, tmp_path):
    root, _, _ = cleaned
    summary = split(str(root), ratios=(0.6, 0.2, 0.2), seed=3, copy_to=str(tmp_path / "out"))
    records = [r for r in read_manifest(str(root)).values() if r["status"] == "ok"]
    assert {r["split"] for r in records} == {"train", "val", "test"}
    for label in CLASSES:
        total = sum(summary[s][label] for s in summary)
        assert abs(summary["train"][label] - 0.6 * total) <= 1.5
    for record in records:
        assert (tmp_path / "out" / record["split"] / record["path"]).exists()
    # groups straddle nothing: labels with planted groups
    labels = ["a"] * 30 + ["b"] * 30
    groups = [k // 3 for k in range(60)]  # groups of three
    names = assign_splits(labels, groups, ratios=(0.6, 0.2, 0.2), seed=1)
    for g in set(groups):
        assert len({names[k] for k in range(60) if groups[k] == g}) == 1
    assert Counter(names) == Counter({"train": 36, "val": 12, "test": 12})
    with pytest.raises(ValueError, match="ratios"):
        split(str(root), ratios=(0.5, 0.5, 0.5))


def test_close_pairs_is_exact_against_brute_force():
    rng = np.random.default_rng(1)
    h = rng.integers(0, 2**62, 3000, dtype=np.uint64)
    for k in range(200):  # plant pairs at every distance up to 12
        h[k] = h[k + 1000] ^ np.uint64(sum(1 << int(b) for b in rng.choice(64, k % 13, replace=False)))
    for threshold in (0, 3, 8, 12):
        i, j, d = close_pairs(h, threshold)
        x = np.bitwise_count(h[:, None] ^ h[None, :])
        bi, bj = np.nonzero(np.triu(x <= threshold, 1))
        assert set(zip(i.tolist(), j.tolist(), strict=True)) == set(zip(bi.tolist(), bj.tolist(), strict=True))
        assert np.all(d == x[i, j])
    assert duplicate_groups(h[:2], 0).tolist() in ([0, 1], [1, 0])
    with pytest.raises(ValueError, match="threshold=17"):
        close_pairs(h, 17)


def test_border_cropping_and_bad_arguments(tmp_path):
    a = np.full((50, 60, 3), 250, np.uint8)
    a[5:45, 10:52] = np.random.default_rng(0).integers(0, 200, (40, 42, 3))
    assert crop_uniform_borders(a) == (5, 10, 45, 52)
    buffer = io.BytesIO()
    Image.fromarray(a).save(buffer, "PNG")
    (tmp_path / "x.png").write_bytes(buffer.getvalue())
    assert load_clean(str(tmp_path / "x.png"), min_size=8).image.size == (42, 40)
    with pytest.raises(ValueError, match="does not exist"):
        clean(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="min_size=0"):
        clean(str(tmp_path), min_size=0)


def test_cli_clean_and_split(tmp_path, capsys):
    from bagnet_keras.app.cli import main

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for k in range(5):
            _jpeg(Image.fromarray(scene(100 * (label == "b") + k)), tmp_path / label / f"{k}.jpg")
    (tmp_path / "a" / "bad.jpg").write_text("not an image")
    assert main(["clean", str(tmp_path)]) == 0
    assert "kept 10 images" in capsys.readouterr().out
    assert main(["split", str(tmp_path), "--ratios", "0.6", "0.2", "0.2"]) == 0
    assert "train" in capsys.readouterr().out
    (tmp_path / "b" / "4.jpg").unlink()  # removed by hand: the manifest must stop offering it
    assert main(["clean", str(tmp_path)]) == 0
    assert read_manifest(str(tmp_path))["b/4.jpg"]["status"] == "missing"
    capsys.readouterr()
    assert main(["clean", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
