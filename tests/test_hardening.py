"""What the hardening keeps working: files compressed before a resume still decompress,
runs are found from any working directory, 16-bit images keep their values, damage to
weights is caught, a full disk is one line, and a model folder's code never runs unasked."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aekit.cli import main
from aekit.data import DataConfig, load_data
from aekit.errors import AekitError
from aekit.train import checkpoint as ckpt

TINY = ["--epochs", "1", "--batch-size", "16", "--channels", "4,8", "--hidden", "16",
        "--no-progress", "--no-report"]  # fmt: skip


def run(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", (rng.random((64, 8, 8)) * 255).astype(np.uint8))
    return tmp_path


def test_files_compressed_before_a_resume_still_decompress(images, capsys):
    vq = images / "vq"
    assert run("train", "vqvae", "--data", images / "x.npy", "--out", vq, *TINY,
               "--codebook-size", "8") == 0  # fmt: skip
    assert run("compress", vq, images / "x.npy", "-o", images / "before.aek") == 0
    assert run("decompress", images / "before.aek", "-o", images / "d1") == 0
    first = np.load(images / "d1" / "images.npy")
    old_weights = (vq / "model.safetensors").read_bytes()

    assert run("train", "--resume", vq, "--epochs", "2", "--no-progress") == 0
    assert (vq / "model.safetensors").read_bytes() != old_weights  # the run moved on
    assert run("decompress", images / "before.aek", "-o", images / "d2") == 0
    assert np.array_equal(np.load(images / "d2" / "images.npy"), first)
    assert run("compress", vq, images / "x.npy", "-o", images / "after.aek") == 0
    assert run("decompress", images / "after.aek", "-o", images / "d3") == 0
    assert len(list((vq / "versions").iterdir())) == 1


def test_a_compressed_file_names_its_run_relative_to_itself(images, capsys):
    vq = images / "runs" / "vq"
    assert run("train", "vqvae", "--data", images / "x.npy", "--out", vq, *TINY,
               "--codebook-size", "8") == 0  # fmt: skip
    (images / "files").mkdir()
    assert run("compress", vq, images / "x.npy", "-o", images / "files" / "a.aek") == 0
    data = (images / "files" / "a.aek").read_bytes()
    assert str(images) not in data.decode("latin-1")  # no absolute path of this machine
    moved = images / "moved"
    moved.mkdir()
    os.rename(images / "runs", moved / "runs")
    os.rename(images / "files", moved / "files")
    assert run("decompress", moved / "files" / "a.aek", "-o", images / "out") == 0


def test_a_run_is_evaluated_from_any_working_directory(images, monkeypatch, capsys):
    monkeypatch.chdir(images)
    assert run("train", "vae", "--data", "x.npy", "--out", "r", *TINY, "--nll-k", "2") == 0
    saved = json.loads((images / "r" / "config.json").read_text())["data"]["source"]
    assert Path(saved).is_absolute()
    elsewhere = images / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run("eval", "../r", "--nll-k", "2") == 0


def test_sixteen_bit_images_are_rescaled_not_clipped(tmp_path):
    folder = tmp_path / "wide"
    folder.mkdir()
    values = np.array([[0, 257, 32896], [65535, 1000, 50000]], dtype=np.uint16)
    for i in range(10):
        Image.fromarray(values).save(folder / f"{i}.png")
    assert Image.open(folder / "0.png").mode.startswith("I")
    x = load_data(DataConfig(source=str(folder), scale="255")).train.x
    expected = np.round(values / 257) / 255
    assert np.allclose(x[0, 0].numpy(), expected, atol=1e-6)
    assert (x == 1).float().mean() < 0.2  # before: 99.6 % of the pixels were 1.0


def test_a_flipped_bit_in_the_weights_is_caught(images, capsys):
    r = images / "r"
    assert run("train", "ae", "--data", images / "x.npy", "--out", r, *TINY, "--nll-k", "0") == 0
    ckpt.load(r)
    weights = bytearray((r / "model.safetensors").read_bytes())
    weights[-5] ^= 0x01
    (r / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(AekitError, match="checksum"):
        ckpt.load(r)


def test_a_full_disk_is_one_line_and_keeps_the_old_file(images, capsys, monkeypatch):
    r = images / "r"
    assert run("train", "ae", "--data", images / "x.npy", "--out", r, *TINY, "--nll-k", "0") == 0
    assert run("encode", r, "--out", images / "z.npy") == 0
    before = (images / "z.npy").read_bytes()
    capsys.readouterr()

    def full(*_, **__):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(images / "z.npy"))

    monkeypatch.setattr(np, "save", full)
    assert run("encode", r, "--out", images / "z.npy") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"aekit: error: {images / 'z.npy'}: No space left on device"]
    assert (images / "z.npy").read_bytes() == before
    assert not [p for p in images.iterdir() if p.name.endswith(".tmp")]


def test_decompress_refuses_a_used_folder_and_overwrite_replaces_only_its_files(images, capsys):
    vq = images / "vq"
    assert run("train", "vqvae", "--data", images / "x.npy", "--out", vq, *TINY,
               "--codebook-size", "8") == 0  # fmt: skip
    np.save(images / "few.npy", np.load(images / "x.npy")[:3])
    assert run("compress", vq, images / "x.npy", "-o", images / "many.aek") == 0
    assert run("compress", vq, images / "few.npy", "-o", images / "few.aek") == 0
    out = images / "out"
    assert run("decompress", images / "many.aek", "-o", out) == 0
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert run("decompress", images / "few.aek", "-o", out) == 1
    assert "not empty" in capsys.readouterr().err
    assert run("decompress", images / "few.aek", "-o", out, "--overwrite") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00000.png", "00001.png", "00002.png", "images.npy", "notes.txt"]


def test_a_model_folder_that_ships_code_is_refused_unless_trusted(tmp_path, monkeypatch):
    from aekit.data.activations import models

    folder = tmp_path / "remote"
    folder.mkdir()
    remote = {"model_type": "bert", "auto_map": {"AutoModel": "evil.M"}}
    (folder / "config.json").write_text(json.dumps(remote))
    with pytest.raises(AekitError, match="--trust-remote-code"):
        models.load_model(folder)
    seen = {}

    class Recorder:
        @staticmethod
        def from_pretrained(where, **options):
            seen.update(options)
            raise OSError("stop here")

    monkeypatch.setattr(models, "_model_class", lambda config: Recorder)
    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", Recorder.from_pretrained)
    with pytest.raises(AekitError):
        models.load_model(folder, trust_remote_code=True)
    assert seen["trust_remote_code"] is True
    seen.clear()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(AekitError):
        models.load_model(folder)
    assert seen["trust_remote_code"] is False  # explicit: transformers never asks on a TTY


def test_the_trust_flag_is_never_read_from_a_saved_run():
    from aekit.data.activations.source import ActivationSource

    source = ActivationSource(model="m", site="s", texts="t", trust_remote_code=True)
    assert "trust_remote_code" not in source.to_dict()
    assert ActivationSource.from_dict(source.to_dict()).trust_remote_code is False


def test_seeds_and_float_flags_are_range_checked(capsys):
    for flags, message in (
        (["--seed", str(2**70)], "seed must be in [0, 2**63)"),
        (["--grad-clip", "nan"], "expected a finite number"),
        (["--k", "5"], "unrecognized arguments: --k"),
    ):
        try:
            code = run("train", "vae", *flags)
        except SystemExit as e:
            code = e.code
        assert code not in (0, None)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
