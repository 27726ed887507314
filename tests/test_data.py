"""Data sources, validation, splitting, scaling and batching. Everything is made in tmp_path;
the only network is a local HTTP server started here."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aekit.data import (
    DataConfig,
    Splits,
    TensorData,
    check_shape,
    download,
    load_all,
    load_data,
    read_idx,
    sources,
)
from aekit.data.download import RemoteDataset, cache_dir, fetch
from aekit.data.validate import check_array, check_labels
from aekit.errors import AekitError

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test may see a real cache, data folder or remote mirror."""
    monkeypatch.setenv("AEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AEKIT_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(sources, "SYSTEM_DATA_DIR", tmp_path / "system")
    dead = RemoteDataset(("http://127.0.0.1:1/",), {n: ("0" * 32, None) for n in IDX_NAMES})
    monkeypatch.setattr(download, "DATASETS", {"mnist": dead, "fashion-mnist": dead})


# --- helpers -----------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def fake_mnist(folder: Path, n_train=50, n_test=20, gz=True, train=True, seed=0) -> dict:
    """Tiny 4x4 'MNIST' whose first pixel numbers the example (train 0.., test 100..)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    arrays = {}
    for prefix, n, start in (("train", n_train, 0), ("t10k", n_test, 100)):
        if prefix == "train" and not train:
            continue
        images = rng.integers(0, 256, size=(n, 4, 4), dtype=np.uint8)
        images[:, 0, 0] = np.arange(start, start + n)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        arrays[prefix] = (images, labels)
    return arrays


def numbered(n=100, d=5) -> np.ndarray:
    """Rows whose first value is their index, so splits can be traced back."""
    x = np.zeros((n, d), dtype=np.float64)
    x[:, 0] = np.arange(n)
    x[:, 1:] = np.arange(n)[:, None] % 7
    return x


def ids(td: TensorData | None, divisor: float = 1.0) -> set[int]:
    if td is None:
        return set()
    return {round(float(v) * divisor) for v in td.x.reshape(len(td), -1)[:, 0]}


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


# --- digits and splitting ----------------------------------------------------------------


def test_digits_shapes_scaling_and_split_sizes():
    splits = load_data(DataConfig(source="digits"))
    assert isinstance(splits, Splits)
    assert splits.train.shape == (1, 8, 8)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1437, 180, 180)
    assert splits.spec.offset == 0.0 and splits.spec.divisor == 16.0
    assert float(splits.train.x.min()) == 0.0 and float(splits.train.x.max()) == 1.0
    assert splits.train.y.dtype == torch.int64 and set(splits.train.y.tolist()) == set(range(10))

    again = load_data(DataConfig(source="digits"))
    assert torch.equal(splits.test.x, again.test.x) and torch.equal(splits.train.y, again.train.y)
    other = load_data(DataConfig(source="digits", split_seed=1))
    assert not torch.equal(splits.test.x, other.test.x)

    everything = load_all(DataConfig(source="digits"))
    assert len(everything) == 1797 and everything.spec.divisor == 16.0


def test_splits_are_disjoint_cover_everything_and_depend_only_on_split_seed(tmp_path):
    np.save(tmp_path / "x.npy", numbered(100))
    spec = DataConfig(source=str(tmp_path / "x.npy"), scale="none", val_fraction=0.2)
    s = load_data(spec)
    train, val, test = ids(s.train), ids(s.val), ids(s.test)
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(range(100))
    assert ids(load_data(spec).test) == test
    assert ids(load_data(DataConfig(source=spec.source, scale="none", split_seed=3)).test) != test


def test_zero_fractions_give_no_val_or_test(tmp_path):
    np.save(tmp_path / "x.npy", numbered(10))
    s = load_data(DataConfig(source=str(tmp_path / "x.npy"), val_fraction=0, test_fraction=0))
    assert s.val is None and s.test is None and len(s.train) == 10
    with pytest.raises(AekitError, match=r"val split .* is empty"):
        s.get("val")


def test_limit_truncates_only_training(tmp_path):
    np.save(tmp_path / "x.npy", numbered(100))
    full = load_data(DataConfig(source=str(tmp_path / "x.npy"), scale="none"))
    small = load_data(DataConfig(source=str(tmp_path / "x.npy"), scale="none", limit=7))
    assert len(small.train) == 7 and ids(small.train) <= ids(full.train)
    assert torch.equal(small.val.x, full.val.x) and torch.equal(small.test.x, full.test.x)
    assert torch.equal(small.train.x, full.train.x[:7])  # the first 7 of the same order


def test_a_fitted_scaling_sees_the_whole_training_part_under_a_limit(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32) * 5
    np.save(tmp_path / "x.npy", x)
    for scale in ("minmax", "standard"):
        full = load_data(DataConfig(source=str(tmp_path / "x.npy"), scale=scale))
        small = load_data(DataConfig(source=str(tmp_path / "x.npy"), scale=scale, limit=3))
        assert small.spec.offset == full.spec.offset and small.spec.divisor == full.spec.divisor
        assert torch.equal(small.train.x, full.train.x[:3])


def test_shuffled_batches_cover_every_example_once(tmp_path):
    np.save(tmp_path / "x.npy", numbered(103))
    data = load_data(DataConfig(source=str(tmp_path / "x.npy"), scale="none")).train
    seen = []
    for batch in data.batches(10, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert batch.x.shape[1:] == (5,)
        seen += batch.x[:, 0].tolist()
    assert sorted(seen) == sorted(ids(data)) and len(seen) == len(data)


# --- IDX files: official test split, t10k only, corrupt files ------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_official_test_split(tmp_path, gz):
    arrays = fake_mnist(tmp_path / "d", gz=gz)
    spec = DataConfig(source="mnist", data_dir=str(tmp_path / "d"), test_fraction=0.5)
    s = load_data(spec)
    # the official test set, untouched by test_fraction; val is 10% of the train pool
    assert (len(s.train), len(s.val), len(s.test)) == (45, 5, 20)
    assert s.train.shape == (1, 4, 4) and s.spec.divisor == 255.0
    assert torch.equal(s.test.x, torch.as_tensor(arrays["t10k"][0][:, None] / 255.0).float())
    assert s.test.y.tolist() == arrays["t10k"][1].tolist()
    assert ids(s.train, 255) | ids(s.val, 255) == set(range(50))

    everything = load_all(spec)
    assert len(everything) == 70
    assert ids(everything, 255) == set(range(50)) | set(range(100, 120))
    assert round(float(everything.x[50, 0, 0, 0]) * 255) == 100  # train, then test


def test_idx_folder_with_only_t10k_is_split_like_a_plain_source(tmp_path, caplog):
    fake_mnist(tmp_path / "d", n_test=40, train=False)
    with caplog.at_level(logging.WARNING, logger="aekit.data.sources"):
        s = load_data(DataConfig(source="mnist", data_dir=str(tmp_path / "d")))
    assert (len(s.train), len(s.val), len(s.test)) == (32, 4, 4)
    assert "only the t10k files" in caplog.text


def test_idx_lookup_prefers_aekit_data_then_system_folder(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "system" / "fashion-mnist", n_train=30)
    assert len(load_all(DataConfig(source="fashion-mnist"))) == 50
    fake_mnist(tmp_path / "env" / "fashion-mnist", n_train=10)
    monkeypatch.setenv("AEKIT_DATA", str(tmp_path / "env"))
    assert len(load_all(DataConfig(source="fashion-mnist"))) == 30


def test_data_dir_with_missing_files_lists_them_and_never_falls_through(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "env" / "mnist")
    monkeypatch.setenv("AEKIT_DATA", str(tmp_path / "env"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AekitError, match="is not a folder"):
        load_data(DataConfig(source="mnist", data_dir=str(tmp_path / "nowhere")))
    with pytest.raises(AekitError, match=r"no IDX files in .*t10k-images-idx3-ubyte"):
        load_data(DataConfig(source="mnist", data_dir=str(tmp_path / "empty")))


def test_read_idx_errors_name_the_file_and_the_problem(tmp_path):
    good = idx_bytes(np.zeros((10, 28, 28)))
    (tmp_path / "short").write_bytes(good[:100])
    with pytest.raises(AekitError, match=r"short: truncated: header says 10x28x28 = 7840 bytes"):
        read_idx(tmp_path / "short")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(good)[:-30])
    with pytest.raises(AekitError, match=r"bad.gz: corrupt gzip stream"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "magic").write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(AekitError, match=r"magic: not an IDX file \(bad magic"):
        read_idx(tmp_path / "magic")
    with pytest.raises(AekitError, match="not found"):
        read_idx(tmp_path / "missing")


def test_read_idx_big_endian_types(tmp_path):
    values = np.array([[1, -2], [300000, 4]], dtype=">i4")
    header = bytes([0, 0, 0x0C, 2]) + np.array([2, 2], ">u4").tobytes()
    (tmp_path / "ints").write_bytes(header + values.tobytes())
    out = read_idx(tmp_path / "ints")
    assert out.dtype == np.int32 and out.dtype.isnative and out.tolist() == values.tolist()


# --- downloads ---------------------------------------------------------------------------


def test_fetch_verifies_uncompressed_md5_and_falls_through_mirrors(tmp_path, server):
    root, url = server
    content = idx_bytes(np.arange(32).reshape(2, 4, 4))
    md5 = hashlib.md5(content).hexdigest()
    (root / "good").mkdir()
    (root / "good" / "f.gz").write_bytes(gzip.compress(content, mtime=1))
    (root / "bad").mkdir()
    (root / "bad" / "f.gz").write_bytes(gzip.compress(content[:-1] + b"\xff"))
    (root / "cut").mkdir()
    (root / "cut" / "f.gz").write_bytes(gzip.compress(content)[:-12])

    path = fetch("f.gz", [url + "good/"], md5, len(content), tmp_path / "dl")
    assert gzip.decompress(path.read_bytes()) == content

    mirrors = [url + "bad/", url + "missing/", url + "cut/", url + "good"]
    path = fetch("f.gz", mirrors, md5, None, tmp_path / "b")
    assert gzip.decompress(path.read_bytes()) == content
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["f.gz"]  # no partial files left

    with pytest.raises(AekitError) as info:
        fetch("f.gz", [*mirrors[:3], "http://127.0.0.1:1/"], md5, None, tmp_path / "c")
    message = str(info.value)
    assert "could not download f.gz" in message and "MD5" in message and "404" in message
    assert url + "cut/f.gz" in message
    assert url + "bad/f.gz" in message and "http://127.0.0.1:1/f.gz" in message
    assert "pass --data-dir DIR or set AEKIT_DATA" in message and "\n" not in message
    assert not (tmp_path / "c" / "f.gz").exists()


def test_builtin_dataset_downloads_into_cache(tmp_path, server, monkeypatch):
    root, url = server
    arrays = fake_mnist(root / "mirror", gz=False)
    table = {}
    for name in IDX_NAMES:
        content = (root / "mirror" / name).read_bytes()
        (root / "mirror" / f"{name}.gz").write_bytes(gzip.compress(content))
        table[name] = (hashlib.md5(content).hexdigest(), len(content))
    remote = RemoteDataset(("http://127.0.0.1:1/", url + "mirror/"), table)
    monkeypatch.setattr(download, "DATASETS", {"mnist": remote})

    s = load_data(DataConfig(source="mnist"))
    assert len(s.test) == 20 and s.test.y.tolist() == arrays["t10k"][1].tolist()
    assert cache_dir() == tmp_path / "cache"
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(
        f"{n}.gz" for n in IDX_NAMES
    )


def test_cache_dir_resolution(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("AEKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "aekit"


# --- array files -------------------------------------------------------------------------


def test_npy_layouts_and_shape(tmp_path):
    np.save(tmp_path / "flat.npy", np.random.default_rng(0).random((20, 12)))
    assert load_all(DataConfig(source=str(tmp_path / "flat.npy"))).shape == (12,)
    spec = DataConfig(source=str(tmp_path / "flat.npy"), shape=(3, 2, 2))
    assert load_all(spec).shape == (3, 2, 2)
    with pytest.raises(AekitError, match=r"flat.npy: cannot reshape .* \(12,\) to \(1, 5\)"):
        load_all(DataConfig(source=str(tmp_path / "flat.npy"), shape=(1, 5)))

    np.save(tmp_path / "hw.npy", np.zeros((4, 6, 5), np.uint8) + 3)
    assert load_all(DataConfig(source=str(tmp_path / "hw.npy"))).shape == (1, 6, 5)

    last = np.random.default_rng(0).integers(0, 255, (4, 6, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "hwc.npy", last)
    data = load_all(DataConfig(source=str(tmp_path / "hwc.npy")))
    assert data.shape == (3, 6, 5)
    assert torch.allclose(data.x[1, 2], torch.as_tensor(last[1, :, :, 2] / 255).float())


def test_npz_keys_and_labels(tmp_path):
    x = np.random.default_rng(0).random((30, 4))
    np.savez(tmp_path / "a.npz", images=x, targets=np.arange(30) % 3, other=np.zeros(2))
    s = load_data(DataConfig(source=str(tmp_path / "a.npz")))
    assert s.train.shape == (4,) and set(s.train.y.tolist()) <= {0, 1, 2}

    np.savez(tmp_path / "single.npz", whatever=x)
    assert load_all(DataConfig(source=str(tmp_path / "single.npz"))).y is None

    np.savez(tmp_path / "odd.npz", a=x, b=x)
    with pytest.raises(AekitError, match=r"odd.npz: no array named x, .* holds: a, b"):
        load_data(DataConfig(source=str(tmp_path / "odd.npz")))


def test_label_file_for_arrays(tmp_path):
    np.save(tmp_path / "x.npy", numbered(10))
    (tmp_path / "y.txt").write_text("label\n" + "\n".join(str(i % 2) for i in range(10)) + "\n")
    data = load_all(DataConfig(source=str(tmp_path / "x.npy"), labels=str(tmp_path / "y.txt")))
    assert data.y.tolist() == [i % 2 for i in range(10)]

    np.save(tmp_path / "y.npy", np.arange(8))
    with pytest.raises(AekitError, match=r"y.npy: 8 labels for 10 examples"):
        load_data(DataConfig(source=str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy")))


def test_csv_header_and_label_column(tmp_path):
    rows = ["a,label,b"] + [f"{i / 10},{i % 3},{1 - i / 10}" for i in range(10)]
    (tmp_path / "h.csv").write_text("\n".join(rows) + "\n")
    by_name = load_all(DataConfig(source=str(tmp_path / "h.csv"), label_column="label"))
    assert by_name.shape == (2,) and by_name.y.tolist() == [i % 3 for i in range(10)]
    assert torch.allclose(by_name.x[4], torch.tensor([0.4, 0.6]))
    by_index = load_all(DataConfig(source=str(tmp_path / "h.csv"), label_column="1"))
    assert torch.equal(by_index.y, by_name.y) and torch.equal(by_index.x, by_name.x)
    with pytest.raises(AekitError, match="no column named 'cls'"):
        load_all(DataConfig(source=str(tmp_path / "h.csv"), label_column="cls"))

    (tmp_path / "plain.csv").write_text("1,2,0\n3,4,1\n5,6,0\n")
    plain = load_all(DataConfig(source=str(tmp_path / "plain.csv"), label_column="-1"))
    assert plain.y.tolist() == [0, 1, 0] and plain.shape == (2,)
    assert len(load_all(DataConfig(source=str(tmp_path / "plain.csv")))) == 3


def test_corrupt_array_files_name_the_file(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,x\n")
    with pytest.raises(AekitError, match=r"bad.csv: line 3, column 2: 'x' is not a number"):
        load_all(DataConfig(source=str(tmp_path / "bad.csv")))
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(AekitError, match=r"bad.npy: not a readable .npy file"):
        load_all(DataConfig(source=str(tmp_path / "bad.npy")))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(AekitError, match=r"bad.npz: not a readable .npz file"):
        load_all(DataConfig(source=str(tmp_path / "bad.npz")))


def test_unknown_source():
    with pytest.raises(AekitError, match=r"unknown data source 'nope': not one of digits, mnist"):
        load_data(DataConfig(source="nope"))


def test_options_that_do_not_apply_are_refused():
    with pytest.raises(AekitError, match="image_size applies only"):
        load_data(DataConfig(source="digits", image_size=(4, 4)))


# --- image folders -----------------------------------------------------------------------


def test_image_folder_with_classes_and_grey_detection(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (("cat", 3), ("dog", 2)):
        for i in range(n):
            grey = rng.integers(0, 255, (6, 5))
            save_png(tmp_path / "f" / cls / f"{i}.PNG", np.stack([grey] * 3, axis=-1))
    (tmp_path / "f" / "notes.txt").write_text("not an image")
    s = load_data(DataConfig(source=str(tmp_path / "f"), val_fraction=0, test_fraction=0))
    assert s.class_names == ["cat", "dog"] and s.train.shape == (1, 6, 5)  # RGB, equal channels
    assert sorted(s.train.y.tolist()) == [0, 0, 0, 1, 1]
    everything = load_all(DataConfig(source=str(tmp_path / "f")))
    assert everything.y.tolist() == [0, 0, 0, 1, 1] and everything.spec.divisor == 255.0
    rgb = load_all(DataConfig(source=str(tmp_path / "f"), grayscale=False))
    assert rgb.shape == (3, 6, 5)

    save_png(tmp_path / "f" / "dog" / "colour.png", rng.integers(0, 255, (6, 5, 3)))
    assert load_all(DataConfig(source=str(tmp_path / "f"))).shape == (3, 6, 5)
    assert load_all(DataConfig(source=str(tmp_path / "f"), grayscale=True)).shape == (1, 6, 5)


def test_image_folder_sizes_resize_and_unreadable(tmp_path):
    save_png(tmp_path / "f" / "a.png", np.zeros((6, 5)))
    save_png(tmp_path / "f" / "b.jpg", np.full((7, 5), 255))
    with pytest.raises(AekitError, match=r"b.jpg: size 7x5 differs from a.png \(6x5"):
        load_all(DataConfig(source=str(tmp_path / "f")))
    resized = load_all(DataConfig(source=str(tmp_path / "f"), image_size=(4, 3)))
    assert resized.shape == (1, 4, 3) and resized.y is None
    assert float(resized.x[0].max()) == 0.0 and float(resized.x[1].min()) > 0.9

    (tmp_path / "f" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(AekitError, match=r"c.png: unreadable image"):
        load_all(DataConfig(source=str(tmp_path / "f"), image_size=(4, 3)))


# --- validation --------------------------------------------------------------------------


def test_nan_and_inf_are_counted_and_located(tmp_path):
    x = np.zeros((20, 2, 6, 6))
    x[12, 0, 4, 5] = np.nan
    x[13, 1, 0, 0] = np.nan
    x[15, 1, 1, 1] = np.nan
    x[19, 0, 0, 0] = -np.inf
    np.save(tmp_path / "x.npy", x)
    message = "x.npy: 3 NaN and 1 inf values; first at example 12, position \\(0, 4, 5\\)"
    with pytest.raises(AekitError, match=message):
        load_data(DataConfig(source=str(tmp_path / "x.npy")))
    with pytest.raises(AekitError, match=r"v: 1 inf value; first at example 0, position 1$"):
        check_array(np.array([[0.0, np.inf]]), "v")


def test_empty_data_and_bad_arrays(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    with pytest.raises(AekitError, match=r"empty.npy: no examples \(empty data\)"):
        load_data(DataConfig(source=str(tmp_path / "empty.npy")))
    with pytest.raises(AekitError, match="at least 2 dimensions"):
        check_array(np.zeros(4), "v")
    with pytest.raises(AekitError, match="real numbers"):
        check_array(np.array([["a"]], dtype=object), "v")


def test_check_labels_and_check_shape():
    assert check_labels(np.array([[1.0], [2.0]]), 2, "y").dtype == np.int64
    with pytest.raises(AekitError, match="y: 100 labels for 120 examples"):
        check_labels(np.zeros(100), 120, "y")
    with pytest.raises(AekitError, match=r"y: labels must be integers; label 1 is 2.5"):
        check_labels(np.array([1.0, 2.5]), 2, "y")
    check_shape((1, 8, 8), (1, 8, 8), "data")
    with pytest.raises(
        AekitError, match=r"data: examples have shape \(1, 28, 28\) but the model expects \(1, 8,"
    ):
        check_shape((1, 28, 28), (1, 8, 8), "data")


# --- scaling -----------------------------------------------------------------------------


def test_scaling_resolution(tmp_path):
    def resolved(x, **kw):
        np.save(tmp_path / "x.npy", x)
        spec = load_data(DataConfig(source=str(tmp_path / "x.npy"), **kw)).spec
        return spec.offset, spec.divisor

    assert resolved(np.full((10, 3), 200, np.uint8)) == (0.0, 255.0)
    assert resolved(np.linspace(0, 1, 30).reshape(10, 3)) == (0.0, 1.0)
    offset, divisor = resolved(np.linspace(-2, 6, 30).reshape(10, 3))
    assert offset >= -2 and 0 < divisor <= 8  # min-max of the training split only
    assert resolved(np.linspace(0, 1, 30).reshape(10, 3), scale="none") == (0.0, 1.0)
    assert resolved(np.linspace(0, 1, 30).reshape(10, 3), scale="255") == (0.0, 255.0)
    assert resolved(np.linspace(0.5, 1, 30).reshape(10, 3), scale="minmax")[0] >= 0.5
    with pytest.raises(AekitError, match="every training value is 3"):
        resolved(np.full((10, 3), 3.0))


def test_saved_scaling_is_reused_on_new_data(tmp_path):
    np.save(tmp_path / "x.npy", np.linspace(-2, 6, 300).reshape(100, 3))
    spec = load_data(DataConfig(source=str(tmp_path / "x.npy"))).spec
    assert load_data(spec).spec == spec

    np.save(tmp_path / "new.npy", np.full((4, 3), 10.0))
    reused = DataConfig.from_dict({**spec.to_dict(), "source": str(tmp_path / "new.npy")})
    data = load_all(reused)
    assert data.spec.offset == spec.offset and data.spec.divisor == spec.divisor
    expected = (10.0 - spec.offset) / spec.divisor
    assert torch.allclose(data.x, torch.full((4, 3), expected))


# --- binarisation ------------------------------------------------------------------------


def test_binarize_dynamic_train_fixed_evaluation(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((200, 16)))
    spec = DataConfig(source=str(tmp_path / "x.npy"), binarize=True)
    s = load_data(spec)
    assert s.train.binarize and not s.val.binarize and not s.test.binarize

    def epoch(seed):
        batches = s.train.batches(50, generator=torch.Generator().manual_seed(seed))
        return torch.cat([b.x for b in batches])

    first, second = epoch(0), epoch(1)
    assert set(torch.unique(first).tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second) and torch.equal(first, epoch(0))
    assert set(torch.unique(s.test.x).tolist()) == {0.0, 1.0}
    again = load_data(spec)
    assert torch.equal(s.val.x, again.val.x) and torch.equal(s.test.x, again.test.x)

    np.save(tmp_path / "wide.npy", np.linspace(0, 2, 64).reshape(16, 4))
    bad = DataConfig(source=str(tmp_path / "wide.npy"), binarize=True, scale="none")
    with pytest.raises(AekitError, match=r"binarize needs values in \[0, 1\]"):
        load_data(bad)
