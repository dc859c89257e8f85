"""Correct at scale (issue 24), at a tiny scale on generated data: the class list train and test share (a renamed or
missing val class folder is refused at prepare, naming it), decode errors that name the file (prepare's header
check, `prepare --verify`, and DataLoader workers), and the CIFAR-100 / SVHN md5 messages."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from easycore import cli
from easycore.data import streaming
from easycore.data.base import DataError
from easycore.data.datasets import open_dataset
from easycore.data.streaming import header_problem
from test_datasets import WNIDS, make_imagenet, save_jpeg


@pytest.fixture
def imagenet(tmp_path, monkeypatch):
    make_imagenet(tmp_path / "data" / "imagenet", per_class=3, val_per_class=2)
    monkeypatch.delenv("EASYCORE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    params = {"data": {"dataset": "imagenet", "root": str(tmp_path / "data"), "n_per_class": 2,
                       "test_n_per_class": 2, "image_size": 32, "workers": 0},
              "runtime": {"device": "cpu"}, "proxy": {"transfer_models": []}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "data" / "imagenet"


def prepare_cli(capsys, *extra) -> tuple[int, str]:
    rc = cli.main(["prepare", "-q", "--out", "data/prepared", *extra])
    err = capsys.readouterr().err.strip()
    return rc, err


def test_imagenet_prepares(imagenet, capsys):
    assert prepare_cli(capsys) == (0, "")
    assert Path("data/prepared/test.safetensors").exists()


@pytest.mark.parametrize("change", ["rename", "remove"])
def test_a_val_class_folder_that_differs_is_refused_at_prepare(imagenet, capsys, change):
    val = imagenet / "val"
    if change == "rename":
        (val / WNIDS[1]).rename(val / "n09999999")
    else:
        shutil.rmtree(val / WNIDS[1])
    rc, err = prepare_cli(capsys)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"{val.as_posix()}/{WNIDS[1]} is missing" in err
    assert ("n09999999 is not a train class" in err) == (change == "rename")
    assert not Path("data/prepared").exists()                    # nothing written


def test_a_truncated_jpeg_is_named_by_prepare(imagenet, capsys):
    victim = sorted((imagenet / "val" / WNIDS[2]).glob("*.JPEG"))[0]
    victim.write_bytes(victim.read_bytes()[:300])
    assert header_problem(victim) and header_problem(sorted((imagenet / "train").rglob("*.JPEG"))[0]) is None
    rc, err = prepare_cli(capsys)
    assert rc == 2 and err == (f"easycore prepare: error: cannot decode image {victim}: truncated JPEG (no "
                               f"end-of-image marker); replace or remove the file and run prepare again")
    assert not Path("data/prepared").exists()


def test_prepare_verify_decodes_every_file(imagenet, capsys):
    """A file no header check can judge (not a JPEG at all): the default passes it, --verify decodes and names it."""
    victim = sorted((imagenet / "train" / WNIDS[0]).glob("*.JPEG"))[1]
    victim.write_bytes(b"not an image at all" * 10)
    assert header_problem(victim) is None
    rc, err = prepare_cli(capsys, "--verify", "--set", "data.workers=2")
    assert rc == 2 and len(err.splitlines()) == 1 and f"cannot decode image {victim}: UnidentifiedImageError" in err
    assert "Traceback" not in err and "worker" not in err
    assert prepare_cli(capsys)[0] == 0                           # the default header check lets it through


@pytest.mark.parametrize("workers", [0, 2])
def test_decode_errors_in_the_loader_name_the_file(imagenet, workers):
    victim = sorted((imagenet / "train" / WNIDS[1]).glob("*.JPEG"))[0]
    victim.write_bytes(b"\xff\xd8garbage\xff\xd9")
    src = open_dataset("imagenet", "train", imagenet.parent)
    loader = streaming.make_loader(src, batch_size=4, shuffle=False, image_size=32, num_workers=workers,
                                   kind="streaming")
    with pytest.raises(DataError) as e:
        list(loader)
    assert str(e.value).startswith(f"cannot decode image {victim}: ") and "\n" not in str(e.value)
    with pytest.raises(DataError, match=f"cannot decode image {victim}"):
        streaming.decode_all(src, image_size=32, num_workers=workers)


# ----------------------------------------------------------------------------- md5 messages (CIFAR-100, SVHN)
def test_files_present_but_not_official_say_so_and_name_real_settings(tmp_path, capsys, monkeypatch):
    from easycore.data.loaders import load_dataset
    from test_datasets import make_cifar100, make_svhn

    make_cifar100(tmp_path)
    make_svhn(tmp_path, "train", n=25)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EASYCORE_DATA", raising=False)
    for name, victim in (("cifar100", tmp_path / "cifar-100-python" / "train"), ("svhn", tmp_path / "train_32x32.mat")):
        with pytest.raises(DataError) as e:
            load_dataset(name, "train", tmp_path)                 # the pipeline's path (prepare)
        msg = str(e.value)
        assert msg.startswith(f"{victim}: md5 ") and "present but differs" in msg and "data.download: true" in msg
        assert "verify_md5 false" not in msg and "download=True" not in msg and "not found" not in msg
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"dataset": name, "root": str(tmp_path)},
                                                              "proxy": {"transfer_models": []}}))
        rc, err = prepare_cli(capsys)
        assert rc == 2 and err == f"easycore prepare: error: {msg}"
    # CIFAR-10 through torchvision: files there but not the official ones
    (tmp_path / "cifar-10-batches-py").mkdir()
    for f in ("data_batch_1", "batches.meta"):
        (tmp_path / "cifar-10-batches-py" / f).write_bytes(b"x")
    with pytest.raises(DataError, match="cifar-10-batches-py are present but torchvision refuses them"):
        load_dataset("cifar10", "train", tmp_path)
