"""The on-disk activation store: exact round trips, every row once per shuffled pass,
determinism, bounded buffering, and one clear error per kind of corruption."""

from __future__ import annotations

import json

import pytest
import torch

import aekit.data.activations.store as store_module
from aekit.data.activations.store import MANIFEST, ActivationStore, StoreWriter, mixed_batches
from aekit.data.tensor_data import Batch
from aekit.errors import AekitError
from sae_fixtures import write_synthetic_store


def _ids_store(tmp_path, rows=1000, dtype="float16", shard_rows=128, name="ids"):
    """A store whose rows name themselves: site "x" holds (i // 1024, i % 1024, -i % 7) and
    site "y" (i % 1024, i // 1024): integers below 2048, exact in float16."""
    i = torch.arange(rows)
    x = torch.stack([i // 1024, i % 1024, -i % 7], 1).float()
    y = torch.stack([i % 1024, i // 1024], 1).float()
    path = tmp_path / name
    with StoreWriter(path, {"x": 3, "y": 2}, dtype=dtype, shard_rows=shard_rows) as w:
        for s in range(0, rows, 97):
            part = slice(s, s + 97)
            n = len(i[part])
            w.add({"x": x[part], "y": y[part]}, i[part], torch.zeros(n), torch.zeros(n))
    return ActivationStore(path)


def _row_ids(batch: Batch) -> torch.Tensor:
    return (batch.x[:, 0] * 1024 + batch.x[:, 1]).long()


def _pass(view, batch_size, seed=None, **kw):
    g = None if seed is None else torch.Generator().manual_seed(seed)
    return list(view.batches(batch_size, shuffle=seed is not None, generator=g, **kw))


# --- round trips ----------------------------------------------------------------------------


def test_float32_round_trip_is_exact(tmp_path):
    store, want = write_synthetic_store(tmp_path / "s", rows=1000, sites={"a": 8, "b": 5})
    assert len(store) == 1000 and store.sites == ["a", "b"]
    assert store.widths == {"a": 8, "b": 5} and store.n_shards == 8  # 7 x 128 + 104
    assert torch.equal(store.read("a", 0, 1000), want["a"])
    assert torch.equal(store.read("b", 100, 700), want["b"][100:700])  # spans 5 shards
    assert store.read("a", 5, 5).shape == (0, 8)
    rows = torch.tensor([0, 127, 128, 999, 500])
    context, position, token = store.token_info(rows)
    assert torch.equal(context, want["context"][rows])
    assert torch.equal(position, want["position"][rows])
    assert torch.equal(token, want["token"][rows])
    # The recorded token is the token at (context, position) of the stored contexts.
    tokens = store.context_tokens(context)
    assert torch.equal(tokens[torch.arange(len(rows)), position], token)
    m = store.manifest
    assert m["format"] == "aekit-activations" and m["version"] == 1
    assert m["rows"] == sum(s["rows"] for s in m["shards"]) == 1000
    assert m["n_contexts"] == 100 and m["context_length"] == 10


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_round_trip_is_the_rounded_values(tmp_path, dtype):
    store, want = write_synthetic_store(tmp_path / "s", rows=300, dtype=dtype)
    got = store.read("a", 0, 300)
    assert got.dtype == torch.float32
    assert torch.equal(got, want["a"])  # exactly the dtype-rounded values
    raw = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    eps = {"float16": 2**-11, "bfloat16": 2**-8}[dtype]
    assert torch.allclose(got, raw, rtol=eps, atol=1e-6)
    assert store.manifest["dtype"] == dtype


def test_unshuffled_batches_are_the_rows_in_order(tmp_path):
    store, want = write_synthetic_store(tmp_path / "s", rows=1000, sites={"a": 8, "b": 3})
    view = store.stream(("a", "b"), start=50, stop=930)
    assert len(view) == 880 and view.shape == (8,)
    batches = _pass(view, 100)
    assert [b.x.shape[0] for b in batches] == [100] * 8 + [80]
    assert all(b.x.dtype == torch.float32 for b in batches)
    assert torch.equal(torch.cat([b.x for b in batches]), want["a"][50:930])
    assert torch.equal(torch.cat([b.y for b in batches]), want["b"][50:930])
    assert [b.x.shape[0] for b in _pass(view, 100, drop_last=True)] == [100] * 8
    single = store.stream("a")
    assert all(b.y is None for b in _pass(single, 256))


# --- shuffling ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("buffer_rows", "batch_size"),
    [(300, 64), (50, 32), (5000, 100), (64, 200)],  # < shard, > store, batch > buffer
)
def test_a_shuffled_pass_yields_every_row_once(tmp_path, buffer_rows, batch_size):
    store = _ids_store(tmp_path, rows=1000)
    view = store.stream(("x", "y"), buffer_rows=buffer_rows)
    batches = _pass(view, batch_size, seed=0)
    ids = torch.cat([_row_ids(b) for b in batches])
    assert sorted(ids.tolist()) == list(range(1000))
    assert all(len(b.x) == batch_size for b in batches[:-1])
    # x and y of a row stay together through the buffer.
    for b in batches:
        assert torch.equal(b.y, torch.stack([b.x[:, 1], b.x[:, 0]], 1))
    assert not torch.equal(ids, torch.arange(1000))
    dropped = _pass(view, batch_size, seed=0, drop_last=True)
    assert all(len(b.x) == batch_size for b in dropped)
    assert len(dropped) == 1000 // batch_size


def test_a_shuffled_sub_range_yields_exactly_its_rows(tmp_path):
    store = _ids_store(tmp_path, rows=1000)
    train, val = store.stream("x", buffer_rows=200).split(150)
    assert (len(train), len(val)) == (850, 150)
    ids = torch.cat([_row_ids(b) for b in _pass(train, 64, seed=3)])
    assert sorted(ids.tolist()) == list(range(850))
    ids = torch.cat([_row_ids(b) for b in _pass(val, 64)])
    assert ids.tolist() == list(range(850, 1000))
    part = store.stream("x").slice(130, 140)
    assert torch.cat([_row_ids(b) for b in _pass(part, 4, seed=0)]).sort().values.tolist() == list(
        range(130, 140)
    )


def test_shuffling_is_deterministic_and_mixes_shards(tmp_path):
    store = _ids_store(tmp_path, rows=1000)
    view = store.stream("x", buffer_rows=256)
    a = torch.cat([_row_ids(b) for b in _pass(view, 32, seed=7)])
    b = torch.cat([_row_ids(b) for b in _pass(view, 32, seed=7)])
    c = torch.cat([_row_ids(b) for b in _pass(view, 32, seed=8)])
    assert torch.equal(a, b) and not torch.equal(a, c)
    # The first batch already draws from two or more shards (128 rows each).
    assert len(set((a[:32] // 128).tolist())) >= 2


def test_buffered_rows_stay_below_buffer_plus_one_shard(tmp_path, monkeypatch):
    shard_rows, buffer_rows = 100, 250
    store = _ids_store(tmp_path, rows=3000, shard_rows=shard_rows)
    reads = []
    real = store_module._readinto

    def counting(f, out, offset):
        reads.append(out.shape[0])
        return real(f, out, offset)

    monkeypatch.setattr(store_module, "_readinto", counting)
    view = store.stream(("x", "y"), buffer_rows=buffer_rows)
    n = sum(len(b.x) for b in view.batches(50, shuffle=True, generator=torch.Generator()))
    assert n == 3000
    assert max(reads) <= shard_rows  # one shard (or less) per read
    bound = buffer_rows + shard_rows
    assert view.last_stats["peak_rows"] <= bound
    assert view.last_stats["allocated_rows"] <= bound
    assert view.last_stats["peak_rows"] >= buffer_rows  # the buffer is actually used
    reads.clear()
    assert sum(len(b.x) for b in view.batches(50)) == 3000
    assert max(reads) <= shard_rows and view.last_stats["peak_rows"] <= shard_rows


def test_mixed_batches_handles_blocks_larger_than_announced():
    blocks = []
    for start, size in ((0, 5), (5, 40), (45, 3)):
        rows = torch.arange(start, start + size, dtype=torch.float32)[:, None]
        blocks.append((size, lambda dest, rows=rows: dest[0].copy_(rows)))
    got = list(
        mixed_batches(blocks, [(1, torch.float32)], batch_size=4, buffer_rows=8, max_block_rows=5)
    )
    assert sorted(torch.cat([g[0] for g in got]).long().flatten().tolist()) == list(range(48))


# --- sampling and views -------------------------------------------------------------------


def test_sample_draws_distinct_rows_paired_across_sites(tmp_path):
    store = _ids_store(tmp_path, rows=1000)
    x = store.sample("x", 200, seed=1)
    y = store.sample("y", 200, seed=1)
    ids = (x[:, 0] * 1024 + x[:, 1]).long()
    assert len(set(ids.tolist())) == 200
    assert torch.equal(y, torch.stack([x[:, 1], x[:, 0]], 1))
    assert torch.equal(store.sample("x", 200, seed=1), x)
    assert not torch.equal(store.sample("x", 200, seed=2), x)
    held = store.sample("x", 5000, seed=0, start=100, stop=400)  # more than the range holds
    ids = (held[:, 0] * 1024 + held[:, 1]).long()
    assert sorted(ids.tolist()) == list(range(100, 400))


def test_view_to_device_and_names(tmp_path):
    store = _ids_store(tmp_path, rows=300)
    view = store.stream("x", name="acts")
    assert view.name == "acts" and view.spec is None and view.device == torch.device("cpu")
    moved = view.to("cpu")
    assert moved is not view and len(moved) == 300
    assert next(iter(moved.batches(10))).x.device == torch.device("cpu")
    with pytest.raises(AekitError, match="not in the store"):
        store.stream("nope")
    with pytest.raises(AekitError, match="one site"):
        store.stream(("x", "y", "x"))
    with pytest.raises(AekitError, match="outside"):
        store.stream("x", start=10, stop=301)
    with pytest.raises(AekitError, match="batch size"):
        next(view.batches(0))


# --- writing --------------------------------------------------------------------------------


def test_writer_refuses_to_overwrite_unless_told(tmp_path):
    write_synthetic_store(tmp_path / "s", rows=200)
    with pytest.raises(AekitError, match=r"already exists.*overwrite"):
        StoreWriter(tmp_path / "s", {"a": 8})
    store, _ = write_synthetic_store(tmp_path / "s", rows=50, overwrite=True, shard_rows=16)
    assert len(store) == 50 and store.n_shards == 4
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "contexts.safetensors",
        MANIFEST,
        *(f"shard-0000{i}.safetensors" for i in range(4)),
    ]


def test_a_failed_capture_leaves_no_store(tmp_path):
    path = tmp_path / "s"
    with pytest.raises(RuntimeError, match="boom"), StoreWriter(path, {"a": 4}, shard_rows=10) as w:
        for _ in range(5):  # 3 shards written before the failure
            w.add({"a": torch.randn(7, 4)}, *(torch.zeros(7, dtype=torch.long),) * 3)
        raise RuntimeError("boom")
    assert not path.exists()
    with pytest.raises(AekitError, match="not a directory"):
        ActivationStore(path)


def test_writer_checks_its_inputs(tmp_path):
    with pytest.raises(AekitError, match="dtype"):
        StoreWriter(tmp_path / "a", {"a": 4}, dtype="int8")
    with pytest.raises(AekitError, match="may not set rows"):
        StoreWriter(tmp_path / "b", {"a": 4}, meta={"rows": 3})
    w = StoreWriter(tmp_path / "c", {"a": 4})
    z = torch.zeros(3, dtype=torch.long)
    with pytest.raises(AekitError, match=r"site 'a'.*\(3, 5\).*expected \(3, 4\)"):
        w.add({"a": torch.zeros(3, 5)}, z, z, z)
    with pytest.raises(AekitError, match="sites"):
        w.add({"b": torch.zeros(3, 4)}, z, z, z)
    with pytest.raises(AekitError, match=r"site 'a'.*infinite as float16.*bfloat16"):
        w.add({"a": torch.full((3, 4), 1e5)}, z, z, z)  # finite, but beyond float16's range
    with pytest.raises(AekitError, match="already in the model's output"):
        w.add({"a": torch.full((3, 4), float("nan"))}, z, z, z)
    with pytest.raises(AekitError, match="no activations"):
        w.close()


# --- corruption -----------------------------------------------------------------------------


def _edit_manifest(path, change):
    m = json.loads((path / MANIFEST).read_text())
    change(m)
    (path / MANIFEST).write_text(json.dumps(m))


def test_corrupt_stores_give_one_clear_line_each(tmp_path):
    def fresh(name):
        return write_synthetic_store(tmp_path / name, rows=500, shard_rows=128)[0].path

    def fails(path, pattern):
        with pytest.raises(AekitError, match=pattern) as e:
            ActivationStore(path)
        assert "\n" not in str(e.value)

    p = fresh("missing")
    (p / "shard-00002.safetensors").unlink()
    fails(p, r"shard-00002\.safetensors is missing")

    p = fresh("truncated")
    shard = p / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    fails(p, r"shard-00001\.safetensors is \d+ bytes but manifest.json says \d+")

    p = fresh("rows")
    _edit_manifest(p, lambda m: m["shards"][3].update(rows=65536))
    fails(p, r"rows/shard-00003\.safetensors holds 116 rows but manifest.json says 65536$")

    p = fresh("total")
    _edit_manifest(p, lambda m: m.update(rows=501))
    fails(p, "says 501 rows but its shards hold 500")

    p = fresh("width")
    _edit_manifest(p, lambda m: m["sites"]["a"].update(width=16))
    fails(p, r"shard-00000\.safetensors: site 'a' has shape \[128, 8\] but manifest.json says")

    p = fresh("dtype")
    _edit_manifest(p, lambda m: m.update(dtype="float16"))
    fails(p, r"site 'a' is F32 but manifest.json says F16")

    p = fresh("garbage")
    size = (p / "shard-00000.safetensors").stat().st_size
    (p / "shard-00000.safetensors").write_bytes(b"\xff" * size)
    fails(p, r"shard-00000\.safetensors is not a readable safetensors shard")

    p = fresh("nomanifest")
    (p / MANIFEST).unlink()
    fails(p, "has shards but no manifest.json: the capture was interrupted")

    p = fresh("format")
    _edit_manifest(p, lambda m: m.update(format="something-else"))
    fails(p, "not an aekit activation store manifest")

    p = fresh("version")
    _edit_manifest(p, lambda m: m.update(version=2))
    fails(p, "version 2; this aekit reads version 1")

    fails(tmp_path / "nothing", "no activation store")
