import numpy as np
import pytest
import torch

from torch.utils.data import DataLoader, TensorDataset

from psaq.data import InputSpec, first_images, loader, official_crop_pct, open_data, spec_from_timm
from psaq.datasets.digits import DIGITS_SPEC, digits_split
from psaq.errors import DatasetError


def test_digits_split_is_deterministic_stratified_and_disjoint():
    train, test = digits_split("train"), digits_split("test")
    assert len(train) == 1437 and len(test) == 360
    assert train.tensors[0].shape[1:] == DIGITS_SPEC.input_size
    counts = torch.bincount(test.tensors[1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit
    assert torch.equal(digits_split("test").tensors[0], test.tensors[0])
    lo, hi = DIGITS_SPEC.pixel_bounds()
    assert train.tensors[0].min() >= lo.min() - 1e-6 and train.tensors[0].max() <= hi.max() + 1e-6


def test_first_images_by_seed():
    train = digits_split("train")
    a, _ = first_images(train, 4, seed=0)
    b, _ = first_images(train, 4, seed=0)
    assert torch.equal(a, b)
    with pytest.raises(DatasetError, match="holds 1437"):
        first_images(train, 5000, seed=0)


@pytest.mark.parametrize("batch", [1, 7, 10, 128])
def test_loader_over_tensors_gives_the_collated_batches_as_views(batch):
    images = torch.randn(10, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(10)
    data = TensorDataset(images, labels)
    got, want = list(loader(data, batch)), list(DataLoader(data, batch_size=batch))
    assert len(got) == len(want) == len(loader(data, batch))
    for (x, y), (wx, wy) in zip(got, want, strict=True):
        assert torch.equal(x, wx) and torch.equal(y, wy)
        assert x.untyped_storage().data_ptr() == images.untyped_storage().data_ptr()  # a view: nothing copied


def save_digits_as_pngs(root, split="test", limit=None):
    """The digits split written as 8-bit PNG class folders, as a user would keep them."""
    from PIL import Image

    images, labels = digits_split(split).tensors
    pixels = ((images[:, 0] * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    for i, (img, label) in enumerate(zip(pixels[:limit], labels[:limit].tolist())):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(folder / f"{i:04d}.png")
    return root


def test_a_folder_is_read_with_the_models_own_normalization(tmp_path):
    """digits-vit normalizes with mean = std = 0.5: a folder of the same digits must give the
    same tensors (up to 8-bit PNG rounding), not ImageNet-normalized ones."""
    root = save_digits_as_pngs(tmp_path / "digits", limit=40)
    data = open_data(DIGITS_SPEC, str(root))
    x, y = data.eval_set[0]
    want = digits_split("test").tensors[0][int(data.eval_set.folders.samples[0][0][-8:-4])]
    assert x.shape == (3, 32, 32)
    assert (x - want).abs().max() < 2 / 255 + 1e-6


def test_a_trained_model_scores_the_same_on_its_digits_as_png_folder(tmp_path, trained_digits):
    from psaq.evaluation import evaluate
    from psaq.sources import eval_loader

    root = save_digits_as_pngs(tmp_path / "digits")
    on_folder = evaluate(trained_digits, eval_loader(open_data(DIGITS_SPEC, str(root))))
    on_tensors = evaluate(trained_digits, eval_loader(open_data(DIGITS_SPEC, "digits")))
    assert on_folder.count == on_tensors.count == 360
    assert abs(on_folder.top1 - on_tensors.top1) <= 100 * 2 / 360


def test_dataset_root_with_train_and_val(tmp_path):
    save_digits_as_pngs(tmp_path / "root" / "val", "test", limit=30)
    save_digits_as_pngs(tmp_path / "root" / "train", "train", limit=40)
    data = open_data(DIGITS_SPEC, str(tmp_path / "root"))
    assert str(tmp_path / "root" / "val") in data.eval_desc and len(data.eval_set) == 30
    assert str(tmp_path / "root" / "train") in data.calib_desc and len(data.calib_set) == 40
    only_val = open_data(DIGITS_SPEC, str(tmp_path / "root" / "val"))
    assert only_val.calib_set is None and "needs --calib-dataset" in only_val.calib_desc
    with pytest.raises(DatasetError, match="is the evaluation folder"):
        open_data(DIGITS_SPEC, str(tmp_path / "root" / "val"), str(tmp_path / "root" / "val"))


def test_calibration_folders_linked_to_the_evaluation_folder_are_refused(tmp_path):
    import os
    import shutil

    save_digits_as_pngs(tmp_path / "val", "test", limit=30)
    save_digits_as_pngs(tmp_path / "train", "train", limit=40)
    shutil.rmtree(tmp_path / "train" / "3")
    os.symlink(tmp_path / "val" / "3", tmp_path / "train" / "3")  # one class folder linked across
    with pytest.raises(DatasetError, match=r"are files of the evaluation folder .* '.*train/3/\d+\.png' is"):
        open_data(DIGITS_SPEC, str(tmp_path / "val"), str(tmp_path / "train"))
    os.unlink(tmp_path / "train" / "3")
    (tmp_path / "train" / "3").mkdir()
    for image in (tmp_path / "val" / "3").iterdir():  # hard links, as a second mount of one disk shows them
        os.link(image, tmp_path / "train" / "3" / image.name)
    with pytest.raises(DatasetError, match="are files of the evaluation folder"):
        open_data(DIGITS_SPEC, str(tmp_path / "val"), str(tmp_path / "train"))


def test_copies_of_test_images_drawn_for_real_are_refused(tmp_path):
    import shutil

    from psaq.sources import real_source

    save_digits_as_pngs(tmp_path / "val", "test", limit=30)
    shutil.copytree(tmp_path / "val", tmp_path / "train")  # copies: other files, same contents
    draw = real_source(open_data(DIGITS_SPEC, str(tmp_path / "val"), str(tmp_path / "train")))
    with pytest.raises(DatasetError, match=r"4 of the 4 calibration images drawn for `real` are evaluation images"):
        draw(4, 0)
    save_digits_as_pngs(tmp_path / "clean", "train", limit=40)
    images, labels = real_source(open_data(DIGITS_SPEC, str(tmp_path / "val"), str(tmp_path / "clean")))(4, 0)
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,)


def test_dataset_paths_expand_the_home_folder(tmp_path, monkeypatch):
    save_digits_as_pngs(tmp_path / "root" / "val", "test", limit=30)
    save_digits_as_pngs(tmp_path / "calib", "train", limit=40)
    monkeypatch.setenv("HOME", str(tmp_path))
    data = open_data(DIGITS_SPEC, "~/root/val", "~/calib")
    assert len(data.eval_set) == 30 and len(data.calib_set) == 40


def test_a_root_read_as_class_folders_is_refused_with_the_counts(tmp_path):
    spec = InputSpec((3, 32, 32), (0.5,) * 3, (0.5,) * 3, 10)
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split / "n01440764").mkdir(parents=True)
    (tmp_path / "imagenet" / "val" / "n01440764" / "x.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="has 1 class folders but the model has 10 outputs"):
        open_data(spec, str(tmp_path / "imagenet"))  # val/ with 1 class
    with pytest.raises(DatasetError, match="2 class folders but the model has 10 outputs; it looks like a dataset root"):
        from psaq.folders import scan_class_folders

        scan_class_folders(tmp_path / "imagenet", 10)


def test_class_folders_are_checked_against_the_models_classes(tmp_path):
    from psaq.folders import scan_class_folders

    for name in ("cat", "dog", "7"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="3 class folders but the model has 10 outputs"):
        scan_class_folders(tmp_path, 10)
    with pytest.raises(DatasetError, match="class folder\\(s\\) cat, dog are not among the model's classes"):
        scan_class_folders(tmp_path, 3, ("7", "8", "9"))
    scanned = scan_class_folders(tmp_path, 3, ("dog", "7", "cat"))
    assert scanned.classes == ("dog", "7", "cat")  # labels follow the model's order, not the folders'


def test_numeric_class_names_are_ordered_as_numbers_and_hidden_entries_skipped(tmp_path):
    from psaq.folders import scan_class_folders

    for name in [str(i) for i in range(1, 11)] + [".ipynb_checkpoints"]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(b"")
    (tmp_path / "1" / ".hidden.png").write_bytes(b"")
    scanned = scan_class_folders(tmp_path, 10)
    assert scanned.classes == tuple(str(i) for i in range(1, 11))
    assert dict((p.split("/")[-2], label) for p, label in scanned.samples)["10"] == 9
    assert len(scanned.samples) == 10


def test_a_symlink_loop_does_not_hang(tmp_path):
    from psaq.folders import scan_class_folders

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    scanned = scan_class_folders(tmp_path, 1)
    assert len(scanned.samples) == 1


def test_folder_checks(tmp_path):
    from psaq.folders import scan_class_folders

    with pytest.raises(DatasetError, match="does not exist"):
        scan_class_folders(tmp_path / "missing", 2)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        scan_class_folders(tmp_path / "file.txt", 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        scan_class_folders(empty, 2)
    (empty / "cat").mkdir()
    with pytest.raises(DatasetError, match="class folder 'cat' holds no images"):
        scan_class_folders(empty, 1)


def test_imagenet_synset_folders_must_be_imagenet_classes(tmp_path):
    from psaq.folders import scan_class_folders

    names = [f"n{i:08d}" for i in range(1000)]
    for name in names:
        (tmp_path / name).mkdir()
    with pytest.raises(DatasetError, match="not among the model's classes"):
        scan_class_folders(tmp_path, 1000)


@pytest.mark.parametrize("content", [True, False])
def test_fingerprint_changes_with_the_files(tmp_path, content):
    from psaq.folders import folder_fingerprint

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"1")
    before = folder_fingerprint(tmp_path, content)
    assert folder_fingerprint(tmp_path, content) == before
    (tmp_path / "a" / "x.png").write_bytes(b"2")  # same size
    changed = folder_fingerprint(tmp_path, content)
    assert changed != before
    (tmp_path / "a" / "y.png").write_bytes(b"1")
    assert len({before, changed, folder_fingerprint(tmp_path, content)}) == 3


def test_official_evaluation_crop():
    import timm

    assert official_crop_pct("deit_small_patch16_224") == 0.875
    assert official_crop_pct("swin_tiny_patch4_window7_224") is None
    assert official_crop_pct("deit3_small_patch16_224") is None
    # the model type decides, as in the official code: tags, hub prefixes and variants alike
    for name in ("deit_small_patch16_224.fb_in1k", "deit_tiny_distilled_patch16_224.fb_in1k",
                 "timm/deit_base_patch16_224.fb_in1k", "hf-hub:timm/deit_small_patch16_224.fb_in1k"):
        assert official_crop_pct(name) == 0.875, name
    assert official_crop_pct("swin_tiny_patch4_window7_224.ms_in1k") is None
    assert official_crop_pct("vit_base_patch16_224.augreg_in21k_ft_in1k") is None
    deit = spec_from_timm(timm.create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10), None)
    swin = spec_from_timm(timm.create_model("swin_tiny_patch4_window7_224"), None)
    assert deit.crop_pct == 0.875 and deit.interpolation == "bicubic" and swin.crop_pct == 0.9
    from psaq.data import eval_transform

    for name in ("deit_tiny_patch16_224", "deit_tiny_patch16_224.fb_in1k"):
        resize = eval_transform(spec_from_timm(timm.create_model("deit_tiny_patch16_224"), name)).transforms[0]
        assert resize.size == 256  # resize 256, centre crop 224, as the official code evaluates DeiT


def test_builtin_dataset_must_fit_the_model():
    spec = InputSpec((3, 64, 64), (0.5,) * 3, (0.5,) * 3, 10)
    with pytest.raises(DatasetError, match="dataset 'digits' gives 10 classes of \\(3, 32, 32\\)"):
        open_data(spec, "digits")
    with pytest.raises(DatasetError, match="pass --dataset PATH"):
        open_data(spec, None)
    assert np.isclose(len(open_data(DIGITS_SPEC, "digits").eval_set), 360)


@pytest.mark.parametrize("kind", ["png16", "tiff16", "tiff-float"])
def test_high_bit_depth_images_are_scaled_not_clipped(tmp_path, kind):
    """The same digits as 8-bit PNGs and as 16-bit or float images give the same tensors."""
    from PIL import Image

    eight = save_digits_as_pngs(tmp_path / "eight", limit=40)
    for image in sorted(eight.rglob("*.png")):
        pixels = np.asarray(Image.open(image), dtype=np.float64)
        target = tmp_path / "deep" / image.parent.name / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "tiff-float":
            Image.fromarray((pixels / 255).astype(np.float32)).save(target.with_suffix(".tif"))
        else:
            deep = Image.fromarray((pixels * 257).astype(np.uint16))
            deep.save(target if kind == "png16" else target.with_suffix(".tif"))
    want, got = open_data(DIGITS_SPEC, str(eight)).eval_set, open_data(DIGITS_SPEC, str(tmp_path / "deep")).eval_set
    assert len(got) == len(want) == 40
    for i in range(len(want)):
        assert torch.equal(got[i][0], want[i][0])


def test_float_images_outside_zero_to_one_are_refused(tmp_path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((8, 8), 200.0, dtype=np.float32)).save(tmp_path / "a" / "x.tif")
    with pytest.raises(DatasetError, match=r"floating-point pixels in \[200, 200\]"):
        open_data(InputSpec((3, 8, 8), (0.5,) * 3, (0.5,) * 3, 1), str(tmp_path)).eval_set[0]


def test_a_folder_named_like_a_built_in_dataset_is_ambiguous(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_digits_as_pngs(tmp_path / "digits", limit=40)
    with pytest.raises(DatasetError, match=r"'digits' names both the built-in dataset and the folder ./digits"):
        open_data(DIGITS_SPEC, "digits")
    assert len(open_data(DIGITS_SPEC, "./digits").eval_set) == 40  # the folder, written as one
    assert len(open_data(DIGITS_SPEC, None, default="digits").eval_set) == 360  # the model's own: built in


def test_an_image_too_large_to_read_safely_is_one_clear_line(tmp_path, monkeypatch):
    """PIL refuses an image of more than twice MAX_IMAGE_PIXELS with an error that is not an
    OSError; it must still come out as a DatasetError naming the file."""
    from PIL import Image

    root = save_digits_as_pngs(tmp_path / "digits", limit=40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the digits PNGs are 32×32: over twice that
    data = open_data(DIGITS_SPEC, str(root))
    with pytest.raises(DatasetError, match=r"image '.*\.png' is too large to read safely"):
        data.eval_set[0]


def test_a_digits_file_other_than_the_one_psaq_knows_is_refused(tmp_path, monkeypatch):
    # the built-in dataset is fixed by the code (no stage hashes it again), so its file is checked
    import shutil
    from importlib import resources

    from psaq.datasets import digits

    assert digits.checked_source().is_file()
    package = tmp_path / "sklearn_data"
    package.mkdir()
    shutil.copy(digits.checked_source(), package / "digits.csv.gz")
    with open(package / "digits.csv.gz", "ab") as f:
        f.write(b"\0")
    monkeypatch.setattr(digits.resources, "files", lambda name: package)
    digits.checked_source.cache_clear()
    try:
        with pytest.raises(DatasetError, match="does not hold the images psaq was measured on"):
            digits.checked_source()
        (package / "digits.csv.gz").unlink()
        with pytest.raises(DatasetError, match="is missing"):
            digits.checked_source()
    finally:
        digits.checked_source.cache_clear()
    assert resources.files("sklearn.datasets.data")  # the real module is untouched


def _png(path, value=128, size=(12, 12), mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)


def test_links_out_of_a_class_folder_are_skipped_and_said(tmp_path):
    """A link back to the root in class a must not label class b's images as a, nor count a file twice;
    a link inside the class folder is followed; a file linked into two classes is refused."""
    from psaq.folders import links_out, scan_class_folders

    root = tmp_path / "val"
    for c in ("a", "b"):
        _png(root / c / "0.png")
    (root / "a" / "up").symlink_to(root)  # an ancestor: would walk b's images under a
    (root / "a" / "b_image.png").symlink_to(root / "b" / "0.png")  # another class's file
    (root / "a" / "sub").mkdir()
    _png(root / "a" / "sub" / "1.png")
    (root / "a" / "same.png").symlink_to(root / "a" / "sub" / "1.png")  # inside, and the same file: once
    scanned = scan_class_folders(root, 2)
    by_label = {label: sorted(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p, l in scanned.samples
                              if l == label) for label in (0, 1)}
    assert len(by_label[0]) == 2 and by_label[1] == ["b/0.png"]
    assert sorted(p.rsplit("/", 1)[-1] for p in scanned.skipped) == ["b_image.png", "up"]
    assert sorted(p.rsplit("/", 1)[-1] for p in links_out(root)) == ["b_image.png", "up"]
    (root / "b" / "hard.png").hardlink_to(root / "a" / "0.png")
    with pytest.raises(DatasetError, match="is the same file as .* an image has one label"):
        scan_class_folders(root, 2)


def test_a_one_channel_model_reads_folders_as_gray(tmp_path):
    spec = InputSpec((1, 16, 16), (0.5,), (0.5,), 2)
    for c in ("a", "b"):
        _png(tmp_path / c / "x.png", value=200)
    data = open_data(spec, str(tmp_path))
    x, _ = data.eval_set[0]
    assert x.shape == (1, 16, 16) and abs(float(x.mean()) - (200 / 255 - 0.5) / 0.5) < 1e-4
    with pytest.raises(DatasetError, match="4-channel images"):
        open_data(InputSpec((4, 16, 16), (0.5,) * 4, (0.5,) * 4, 2), str(tmp_path))


def test_exif_rotated_images_are_read_as_stored_and_counted(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        _png(tmp_path / c / "plain.png")
    img = Image.new("RGB", (20, 10), (10, 200, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # shown rotated by 90°
    img.save(tmp_path / "a" / "rotated.jpg", exif=exif.tobytes())
    data = open_data(InputSpec((3, 16, 16), (0.5,) * 3, (0.5,) * 3, 2, crop_pct=1.0), str(tmp_path))
    for i in range(len(data.eval_set)):
        data.eval_set[i]
    assert [p.rsplit("/", 1)[-1] for p in data.eval_set.rotated] == ["rotated.jpg"]


def test_a_headless_backbone_takes_any_class_count_with_matching_splits(tmp_path):
    """Its labels serve the k-NN index only: any number of class folders, but train/ and val/
    must name the same classes (the labels follow folder order)."""
    import dataclasses

    headless = dataclasses.replace(DIGITS_SPEC, num_classes=0, class_names=None)
    save_digits_as_pngs(tmp_path / "root" / "val", "test", limit=30)
    save_digits_as_pngs(tmp_path / "root" / "train", "train", limit=40)
    classes = sorted(p.name for p in (tmp_path / "root" / "val").iterdir())
    data = open_data(headless, str(tmp_path / "root"))
    assert len(data.eval_set) == 30 and len(data.calib_set) == 40
    assert len(open_data(headless, "digits").eval_set) == 360  # a built-in dataset, whatever its class count
    extra = tmp_path / "root" / "train" / "zz-extra"
    extra.mkdir()
    import shutil

    shutil.copyfile(sorted((tmp_path / "root" / "train" / classes[0]).iterdir())[0], extra / "copied.png")
    with pytest.raises(DatasetError, match="class folders of .* differ .*'zz-extra'.*must carry the test images' labels"):
        open_data(headless, str(tmp_path / "root"))
    with pytest.raises(DatasetError, match="has 11 class folders but the model has 10 outputs"):
        open_data(DIGITS_SPEC, str(tmp_path / "root"))
