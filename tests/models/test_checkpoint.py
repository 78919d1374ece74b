"""Checkpoints round-trip through files; mismatched, corrupt and missing ones are refused."""

import pytest
import torch

from psaq.errors import CheckpointError
from psaq.models import ModelConfig, load_checkpoint, load_model, save_checkpoint
from tests.tiny import tiny_swin, tiny_vit

TINY_VIT_ARGS = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt-wrapped"])
def test_round_trip_through_a_file(tmp_path, fmt, images):
    torch.manual_seed(0)
    src = tiny_vit()
    if fmt == "safetensors":
        path = save_checkpoint(src, tmp_path / "w.safetensors")
    else:
        path = tmp_path / "w.pt"
        state = src.state_dict()
        torch.save({"model": state} if fmt == "pt-wrapped" else state, path)
    torch.manual_seed(1)
    dst = load_checkpoint(tiny_vit(), path)
    torch.testing.assert_close(dst(images), src(images))


def test_safetensors_named_pt_is_read_as_safetensors(tmp_path, images):
    torch.manual_seed(0)
    src = tiny_vit()
    path = save_checkpoint(src, tmp_path / "w.safetensors").rename(tmp_path / "w.pt")
    torch.testing.assert_close(load_checkpoint(tiny_vit(), path)(images), src(images))


@pytest.mark.parametrize("prefix", ["module.", "model."])
def test_a_wrapper_prefix_on_every_key_is_read_without_it(tmp_path, images, prefix):
    torch.manual_seed(0)
    src = tiny_vit()
    torch.save({prefix + k: v for k, v in src.state_dict().items()}, tmp_path / "w.pt")
    torch.testing.assert_close(load_checkpoint(tiny_vit(), tmp_path / "w.pt")(images), src(images))
    # a prefix on only some keys is not a wrapper's: refused with the keys named
    state = {(prefix + k if k.startswith("blocks") else k): v for k, v in src.state_dict().items()}
    torch.save(state, tmp_path / "some.pt")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_checkpoint(tiny_vit(), tmp_path / "some.pt")


def test_timm_name_with_overrides_and_local_checkpoint(tmp_path, images):
    torch.manual_seed(0)
    src = tiny_vit()
    path = save_checkpoint(src, tmp_path / "vit.safetensors")
    loaded = load_model(ModelConfig("vit_tiny_patch16_224", str(path), model_args=TINY_VIT_ARGS))
    assert loaded.dataset is None and loaded.spec.input_size == (3, 32, 32)
    assert loaded.checkpoint_sha256 and len(loaded.checkpoint_sha256) == 64
    torch.testing.assert_close(loaded.model(images), src(images))


def test_checkpoint_for_another_architecture_names_its_keys(tmp_path):
    path = save_checkpoint(tiny_swin(), tmp_path / "swin.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tiny_vit(), path)
    msg = str(info.value)
    assert "missing keys" in msg and "unexpected keys" in msg
    assert "blocks.0" in msg and "layers.0" in msg


def test_shape_mismatch_is_reported(tmp_path):
    path = save_checkpoint(tiny_vit(num_classes=5), tmp_path / "five.safetensors")
    with pytest.raises(CheckpointError, match=r"shape mismatches.*head.weight"):
        load_checkpoint(tiny_vit(), path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tiny_vit(), tmp_path / "nope.safetensors")
    for name, content in [("bad.safetensors", b"not a safetensors file"), ("bad.pt", b"\x80garbage")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match="corrupt"):
            load_checkpoint(tiny_vit(), tmp_path / name)
    # a truncated real file
    good = save_checkpoint(tiny_vit(), tmp_path / "good.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tiny_vit(), tmp_path / "cut.safetensors")


def test_pickled_objects_are_not_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tiny_vit(), path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path, bad):
    src = tiny_vit()
    with torch.no_grad():
        src.blocks[1].mlp.fc2.weight[0, 0] = bad
    path = save_checkpoint(src, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="holds NaN or Inf values in 1 tensor.*blocks.1.mlp.fc2.weight"):
        load_model(ModelConfig("vit_tiny_patch16_224", str(path), model_args=TINY_VIT_ARGS))


def test_class_names_in_a_checkpoint_must_match_the_outputs(tmp_path):
    import json

    from psaq.models.checkpoint import CLASS_NAMES_KEY

    path = save_checkpoint(tiny_vit(), tmp_path / "named.safetensors", {CLASS_NAMES_KEY: json.dumps(["a", "b"])})
    with pytest.raises(CheckpointError, match="names 2 classes but the model has 10 outputs"):
        load_model(ModelConfig("vit_tiny_patch16_224", str(path), model_args=TINY_VIT_ARGS))
    path = save_checkpoint(tiny_vit(), tmp_path / "ok.safetensors", {CLASS_NAMES_KEY: json.dumps(list("abcdefghij"))})
    assert load_model(ModelConfig("vit_tiny_patch16_224", str(path), model_args=TINY_VIT_ARGS)).spec.class_names[0] == "a"


def test_random_weights_are_seeded_and_on_request_only():
    a = load_model(ModelConfig("vit_tiny_patch16_224", model_args=TINY_VIT_ARGS, random_weights=True, train_seed=3))
    b = load_model(ModelConfig("vit_tiny_patch16_224", model_args=TINY_VIT_ARGS, random_weights=True, train_seed=3))
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_a_full_disk_while_writing_safetensors_is_an_oserror_naming_the_file(tmp_path):
    """safetensors reports a failed write as its own error type; psaq's entry points answer
    OSError in one line, so the writer must hand it on as one (a file-size limit fails the write
    as a full disk does, with EFBIG)."""
    import errno
    import resource

    from psaq.models.checkpoint import write_safetensors

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(OSError) as caught:
            write_safetensors({"w": torch.zeros(256, 256)}, tmp_path / "w.safetensors", {})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert caught.value.errno == errno.EFBIG and str(tmp_path / "w.safetensors") in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_timm_training_checkpoints_with_and_without_the_ema_copy(tmp_path, images):
    """timm's train script saves {"state_dict", "state_dict_ema", "optimizer", …}: psaq reads the trained
    weights, or the EMA copy where it is the only one; other nestings name the key to save alone."""
    torch.manual_seed(0)
    trained, ema = tiny_vit(), tiny_vit()
    torch.save({"epoch": 3, "arch": "vit", "state_dict": trained.state_dict(), "state_dict_ema": ema.state_dict(),
                "optimizer": {"lr": torch.tensor(0.1)}}, tmp_path / "both.pth.tar")
    torch.save({"epoch": 3, "state_dict_ema": ema.state_dict()}, tmp_path / "ema.pth.tar")
    torch.testing.assert_close(load_checkpoint(tiny_vit(), tmp_path / "both.pth.tar")(images), trained(images))
    torch.testing.assert_close(load_checkpoint(tiny_vit(), tmp_path / "ema.pth.tar")(images), ema(images))
    torch.save({"epoch": 3, "weights": trained.state_dict()}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"holds tensors under 'weights': save that entry alone"):
        load_checkpoint(tiny_vit(), tmp_path / "other.pth")
