"""The mathematics of the discrete bottlenecks: nearest codes, estimators, codebook updates,
exact index maps, and the invariants of FSQ, LFQ and BSQ codes."""

import itertools
import math

import pytest
import torch

import aekit
from aekit.bottlenecks import BOTTLENECKS
from aekit.bottlenecks.binary import EXACT_ENTROPY_BITS, batch_code_entropy, binary_entropy
from aekit.bottlenecks.quantizer import rotation_trick, straight_through
from aekit.components import Dims, make_options, options_class
from conftest import TINY_NET


def quantizer(kind: str, width_multiple: int = 1, **options):
    cls = BOTTLENECKS[kind]
    opts = make_options(options_class(cls), options, kind)
    return cls(opts, Dims((1, 8, 8), opts.vector_width * width_multiple))


def test_vq_picks_the_nearest_code_and_reports_the_paper_losses():
    q = quantizer("vq", codebook_size=7, code_dim=3, commitment=0.25)
    x = torch.randn(50, 3)
    out = q.quantize(x)
    brute = torch.stack([((x[:, None] - q.embedding[None]) ** 2).sum(-1)]).squeeze(0).argmin(1)
    assert torch.equal(out.indices[:, 0], brute)
    e = q.embedding[brute]
    assert torch.allclose(out.z_q, e, atol=1e-6)
    assert torch.allclose(out.losses["commitment"], 0.25 * ((x - e) ** 2).sum(1), atol=1e-5)
    assert torch.allclose(out.losses["codebook"], ((x - e) ** 2).sum(1), atol=1e-5)


def test_straight_through_passes_the_gradient_unchanged_and_codebook_loss_reaches_only_codes():
    q = quantizer("vq", codebook_size=5, code_dim=4)
    x = torch.randn(20, 4, requires_grad=True)
    out = q.quantize(x)
    g = torch.randn_like(out.z_q)
    (grad_x,) = torch.autograd.grad((out.z_q * g).sum(), x, retain_graph=True)
    assert torch.allclose(grad_x, g)
    grad_e, grad_x2 = torch.autograd.grad(
        out.losses["codebook"].sum(), [q.embedding, x], allow_unused=True
    )
    assert grad_e.abs().sum() > 0 and grad_x2 is None
    assert straight_through(x, x.detach() * 2).grad_fn is not None


def test_rotation_trick_outputs_the_code_and_backpropagates_through_a_scaled_rotation():
    torch.manual_seed(1)
    x, e = torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    assert torch.allclose(rotation_trick(x, e), e)
    jacobian = torch.autograd.functional.jacobian(lambda v: rotation_trick(v, e), x)[0, :, 0, :]
    scale = e.norm() / x.norm()
    rotation = jacobian / scale
    assert torch.allclose(rotation @ rotation.T, torch.eye(5, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(rotation @ (x[0] / x.norm()), e[0] / e.norm())
    # Not the identity: the gradient knows the angle between x and its code.
    assert not torch.allclose(jacobian, torch.eye(5, dtype=torch.float64))


def test_ema_update_moves_used_codes_to_the_mean_of_their_vectors():
    q = quantizer("vq", codebook_size=4, code_dim=2, ema=True, ema_decay=0.0, ema_epsilon=1e-9)
    q.train()
    x = torch.tensor([[0.0, 0.0], [0.2, 0.0], [10.0, 10.0]])
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.1], [9.0, 9.0], [-50.0, 0], [50.0, 0]]))
    q.quantize(x)
    assert torch.allclose(q.embedding[0], torch.tensor([0.1, 0.0]), atol=1e-6)
    assert torch.allclose(q.embedding[1], torch.tensor([10.0, 10.0]), atol=1e-6)
    assert "codebook" not in q.quantize(x).losses  # the EMA replaces the codebook loss


def test_kmeans_initialisation_uses_every_cluster_of_separated_data():
    centres = torch.randn(8, 3) * 20
    x = centres.repeat(40, 1) + 0.01 * torch.randn(320, 3)
    q = quantizer("vq", codebook_size=8, code_dim=3, kmeans_init=20)
    q.train()
    q.quantize(x)
    q.eval()
    used = q.quantize(x).indices.unique().numel()
    assert used >= 7  # k-means from random starts may merge two of the eight clusters
    assert bool(q.initialised)


def test_restart_pulls_a_dead_code_to_its_nearest_encoder_output():
    q = quantizer("vq", codebook_size=3, code_dim=2, restart=True)
    q.train()
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [100.0, 100.0]]))
        q.usage.copy_(torch.tensor([0.5, 0.5, 0.0]))
    x = torch.tensor([[0.1, 0.0], [0.9, 0.0], [3.0, 3.0]])
    q.quantize(x)
    assert torch.allclose(q.embedding[2], torch.tensor([3.0, 3.0]), atol=1e-4)
    assert torch.allclose(q.embedding[0], torch.tensor([0.0, 0.0]), atol=1e-3)


def test_simvq_learns_only_the_linear_map_and_cosine_codes_are_unit():
    q = quantizer("vq", codebook_size=6, code_dim=4, simvq=True)
    assert not q.embedding.requires_grad and q.projection.weight.requires_grad
    out = q.quantize(torch.randn(10, 4))
    (grad,) = torch.autograd.grad(out.losses["codebook"].sum(), q.projection.weight)
    assert grad.abs().sum() > 0
    c = quantizer("vq", codebook_size=6, code_dim=4, cosine=True)
    assert torch.allclose(c.codebook().norm(dim=1), torch.ones(6))
    assert torch.allclose(c.quantize(torch.randn(9, 4)).z_q.norm(dim=1), torch.ones(9))


def test_residual_stages_refine_and_a_prefix_of_the_indices_decodes_coarser():
    torch.manual_seed(0)
    q = quantizer("rvq", codebook_size=16, code_dim=3, stages=4, kmeans_init=10)
    x = torch.randn(400, 3)
    q.train()
    q.quantize(x)  # k-means initialises every stage on its own residuals
    q.eval()
    idx = q.quantize(x).indices
    errors = [((q.lookup(idx[:, :s]) - x) ** 2).sum(1).mean() for s in range(1, 5)]
    assert all(a > b for a, b in itertools.pairwise(errors))
    assert torch.allclose(q.lookup(idx), q.quantize(x).z_q, atol=1e-5)
    stage_codes = [q.stage(s).embedding for s in range(4)]
    assert not torch.allclose(stage_codes[0], stage_codes[1])  # not the first stage's grid


def test_quantizer_dropout_trains_each_example_on_a_prefix_of_stages():
    q = quantizer("rvq", 3, codebook_size=8, code_dim=2, stages=3, quantizer_dropout=1.0)
    q.train()
    v = torch.randn(60 * 3, 2)
    keep = q.kept_stages(v.shape[0], v.device)
    per_example = keep.view(60, 3, 3)
    assert torch.equal(per_example, per_example[:, :1].expand(-1, 3, -1))  # positions agree
    depth = keep.sum(1)
    assert set(depth.unique().tolist()) == {1.0, 2.0, 3.0}
    assert torch.equal(keep, (torch.arange(3) < depth[:, None]).float())  # always a prefix
    q.eval()
    assert q.kept_stages(v.shape[0], v.device).all()


def residual_assignments(codebooks, v):
    """Each stage's residuals and indices under fixed codebooks (one per stage), by brute
    force: what the stages see in a step before any codebook changes."""
    residuals, indices, r = [], [], v
    for codebook in codebooks:
        idx = ((r[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
        residuals.append(r)
        indices.append(idx)
        r = r - codebook[idx]
    return residuals, indices


def ema_closed_form(count, total, vectors, idx, decay, eps):
    """One EMA update from vectors assigned to idx: counts, sums, and the smoothed codes."""
    k = count.shape[0]
    count = decay * count + (1 - decay) * torch.bincount(idx, minlength=k).to(count)
    sums = torch.zeros_like(total).index_add_(0, idx, vectors)
    total = decay * total + (1 - decay) * sums
    n = count.sum()
    return count, total, total / ((count + eps) / (n + k * eps) * n).unsqueeze(1)


def test_a_shared_ema_codebook_decays_once_per_step_on_the_pooled_stages():
    q = quantizer("rvq", codebook_size=6, code_dim=2, stages=3, shared_codebook=True, ema=True)
    q.train()
    o, book = q.options, q.stages[0]
    before = (book.embedding.clone(), book.ema_count.clone(), book.ema_sum.clone())
    v = torch.randn(40, 2)
    out = q.quantize(v)
    residuals, indices = residual_assignments([before[0]] * 3, v)
    assert torch.equal(out.indices, torch.stack(indices, 1))  # all stages saw the same book
    count, total, codes = ema_closed_form(
        before[1], before[2], torch.cat(residuals), torch.cat(indices), o.ema_decay, o.ema_epsilon
    )
    assert torch.allclose(book.ema_count, count, atol=1e-6)
    assert torch.allclose(book.ema_sum, total, atol=1e-5)
    assert torch.allclose(book.embedding, codes, atol=1e-5)


@pytest.mark.parametrize("shared", [False, True])
def test_stages_dropped_by_quantizer_dropout_leave_the_codebook_statistics_alone(
    shared, monkeypatch
):
    q = quantizer(
        "rvq", codebook_size=6, code_dim=2, stages=3, shared_codebook=shared, ema=True,
        restart=True, quantizer_dropout=1.0,
    )  # fmt: skip
    q.train()
    n = 30
    # Rows 0..9 use one stage, 10..19 two, and no row the third.
    keep = torch.ones(n, 3)
    keep[:10, 1:] = 0
    keep[:, 2] = 0
    monkeypatch.setattr(q, "kept_stages", lambda rows, device: keep)
    books = [q.stage(s) for s in range(3)]
    before = [
        {name: getattr(b, name).clone() for name in ("embedding", "ema_count", "ema_sum", "usage")}
        for b in books
    ]
    v = torch.randn(n, 2)
    residuals, indices = residual_assignments([b["embedding"] for b in before], v)
    kept = [keep[:, s].bool() for s in range(3)]
    o = q.options
    if shared:
        vectors = torch.cat([r[m] for r, m in zip(residuals, kept, strict=True)])
        idx = torch.cat([i[m] for i, m in zip(indices, kept, strict=True)])
        expected = {0: (vectors, idx)}
    else:
        expected = {s: (residuals[s][kept[s]], indices[s][kept[s]]) for s in range(2)}
    q.quantize(v)
    for s, (vectors, idx) in expected.items():
        book, old = books[s], before[s]
        count, _, _ = ema_closed_form(
            old["ema_count"], old["ema_sum"], vectors, idx, o.ema_decay, o.ema_epsilon
        )
        assert torch.allclose(book.ema_count, count, atol=1e-6)
        share = torch.bincount(idx, minlength=6).float() / len(idx)
        usage = o.restart_decay * old["usage"] + (1 - o.restart_decay) * share
        assert torch.allclose(book.usage, usage, atol=1e-6)
    if not shared:  # the stage no row used: nothing moves
        for name, value in before[2].items():
            assert torch.equal(getattr(books[2], name), value), name


def test_product_vq_codes_each_group_with_its_own_codebook():
    q = quantizer("pvq", codebook_size=5, code_dim=6, groups=3)
    x = torch.randn(30, 6)
    out = q.quantize(x)
    assert out.indices.shape == (30, 3)
    for g, part in enumerate(x.split(2, 1)):
        assert torch.equal(out.indices[:, g], q.groups[g].quantize(part).indices[:, 0])
    assert torch.allclose(q.lookup(out.indices), out.z_q, atol=1e-6)


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (3,), (2, 4, 7)])
def test_fsq_codes_lie_on_the_grid_and_index_maps_are_exact(levels):
    q = quantizer("fsq", levels=levels, pre_norm="none")
    out = q.quantize(torch.randn(2000, len(levels)) * 3)
    half = torch.tensor([lv // 2 for lv in levels], dtype=torch.float32)
    digits = out.z_q * half + half
    assert torch.allclose(digits, digits.round(), atol=1e-5)
    assert (digits >= -1e-5).all() and (digits <= torch.tensor(levels) - 1 + 1e-5).all()
    grid = q.grid()
    assert grid.shape == (math.prod(levels), len(levels))
    assert grid.unique(dim=0).shape[0] == math.prod(levels)  # a bijection
    # Quantizing the pre-image of every grid point gives its own index back.
    pre = torch.atanh(((grid * half + q.offset) / q.half_range).clamp(-0.999999, 0.999999))
    assert torch.equal(q.quantize(pre - q.shift).indices[:, 0], torch.arange(len(grid)))
    at_zero = q.bound(torch.zeros(1, len(levels)))
    centred = torch.tensor(levels) > 2
    assert torch.allclose(at_zero[:, centred], torch.zeros(1, int(centred.sum())))
    assert torch.allclose(at_zero[:, ~centred], torch.full((1, int((~centred).sum())), -0.5))
    assert out.losses == {}


def test_fsq_gradient_is_straight_through_the_rounding_of_the_tanh_bound():
    q = quantizer("fsq", levels=(8, 5), pre_norm="none")
    v = torch.randn(10, 2, requires_grad=True)
    out = q.quantize(v)
    (grad,) = torch.autograd.grad(out.z_q.sum(), v)
    expected = (1 - torch.tanh(v + q.shift) ** 2) * q.half_range / q.half_width
    assert torch.allclose(grad, expected.detach(), atol=1e-6)


@pytest.mark.parametrize("kind", ["lfq", "bsq"])
def test_binary_codes_are_signs_with_exact_index_maps(kind):
    q = quantizer(kind, bits=6)
    v = torch.randn(500, 6)
    out = q.quantize(v)
    level = 1.0 if kind == "lfq" else 1 / math.sqrt(6)
    assert torch.allclose(out.z_q.abs(), torch.full_like(out.z_q, level))
    assert torch.equal(out.z_q > 0, v > 0)
    all_codes = torch.arange(64)[:, None]
    assert torch.equal(q.quantize(q.lookup(all_codes)).indices, all_codes)
    if kind == "bsq":
        assert torch.allclose(out.z_q.norm(dim=1), torch.ones(500), atol=1e-6)
    w = torch.randn(4, 6, requires_grad=True)
    (grad,) = torch.autograd.grad(q.quantize(w).z_q.sum(), w)
    assert grad.abs().sum() > 0


def test_batch_code_entropy_is_exact_for_small_codes_and_the_per_bit_bound_above():
    torch.manual_seed(0)
    p = torch.rand(40, 3, dtype=torch.float64)
    codes = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)], dtype=p.dtype)
    q = torch.stack([(p**c * (1 - p) ** (1 - c)).prod(1) for c in codes], 1)  # (40, 8)
    mean_q = q.mean(0)
    exact = -(mean_q * mean_q.log()).sum()
    assert torch.allclose(batch_code_entropy(p), exact)
    factorised = binary_entropy(p.mean(0)).sum()
    assert factorised >= exact - 1e-12
    wide = torch.rand(10, EXACT_ENTROPY_BITS + 1, dtype=torch.float64)
    assert torch.allclose(batch_code_entropy(wide), binary_entropy(wide.mean(0)).sum())


def test_lfq_entropy_penalty_rewards_confident_and_diverse_codes():
    q = quantizer("lfq", bits=4, entropy_weight=1.0)
    q.train()
    diverse = torch.tensor([[(c >> d) & 1 for d in range(4)] for c in range(16)]) * 2.0 - 1
    collapsed = torch.ones(16, 4)
    assert (
        q.quantize(diverse).losses["entropy"].mean()
        < q.quantize(collapsed).losses["entropy"].mean()
    )
    q.eval()
    assert "entropy" not in q.quantize(diverse).losses


QUANTIZER_MODELS = [
    ("vqvae", {}),
    ("vqvae-ema", {"restart": True}),
    ("rqvae", {"stages": 3}),
    ("vqvae", {"bottleneck": "pvq"}),
    ("fsq", {}),
    ("lfq", {}),
    ("bsq", {}),
]


@pytest.mark.parametrize("name, options", QUANTIZER_MODELS)
def test_encode_then_decode_indices_is_the_reconstruction(name, options):
    model = aekit.build(name, (1, 8, 8), **TINY_NET, **options).eval()
    x = torch.rand(5, 1, 8, 8)
    idx = model.encode_indices(x)
    q = model.quantizer
    assert idx.shape == (5, q.positions, q.slots) and idx.dtype == torch.int64
    assert q.positions == 4  # the 2x2 grid of the two-stage conv body on 8x8 images
    assert torch.equal(model.decode_indices(idx), model.reconstruct(x))
    assert torch.allclose(q.codes_from_indices(idx), model.encode(x), atol=1e-6)


def test_bad_indices_and_bad_options_get_clear_errors():
    model = aekit.build("vqvae", (1, 8, 8), **TINY_NET, codebook_size=16)
    good = model.encode_indices(torch.rand(2, 1, 8, 8))
    with pytest.raises(aekit.AekitError, match=r"index 16 in slot 0 is outside the codebook"):
        model.decode_indices(torch.full_like(good, 16))
    with pytest.raises(aekit.AekitError, match=r"index -1 in slot 0"):
        model.decode_indices(torch.full_like(good, -1))
    with pytest.raises(aekit.AekitError, match="integers"):
        model.decode_indices(good.float())
    with pytest.raises(aekit.AekitError, match=r"expected \(N, 4, 1\)"):
        model.decode_indices(good[:, :3])
    with pytest.raises(aekit.AekitError, match="continuous"):
        aekit.build("vae", (1, 8, 8), 4).encode_indices(torch.rand(1, 1, 8, 8))
    with pytest.raises(aekit.AekitError, match="at least 2"):
        aekit.build("fsq", (1, 8, 8), levels=(8, 1))
    with pytest.raises(aekit.AekitError, match="codebook_size must be at least 1"):
        aekit.build("vqvae", (1, 8, 8), codebook_size=0)
    with pytest.raises(aekit.AekitError, match="latent_dim 5 does not match"):
        aekit.build("vqvae", (1, 8, 8), 5)
    with pytest.raises(aekit.AekitError, match="cannot use ema"):
        aekit.build("vqvae", (1, 8, 8), simvq=True, ema=True)


def test_flat_data_gets_a_fixed_number_of_code_vectors():
    model = aekit.build("fsq", (10,), levels=(5, 5, 5))
    assert model.config.body.kind == "auto" and model.latent_dim == 12
    assert model.quantizer.positions == 4
    model = aekit.build("vqvae", (10,), 32, code_dim=8)
    assert model.quantizer.positions == 4


def test_a_quantizer_model_trains_from_the_command_line(tmp_path):
    import numpy as np

    from aekit.cli import main

    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((64, 1, 8, 8)).astype("float32"))
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "rqvae",
            "--data",
            str(data),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--channels",
            "4,8",
            "--codebook-size",
            "8",
            "--stages",
            "2",
            "--quantizer-dropout",
            "0.5",
            "--out",
            str(run),
            "--quiet",
            "--no-report",
            "--no-progress",
        ]
    )
    assert code == 0
    model = aekit.load(run)
    assert model.quantizer.slots == 2
    out = tmp_path / "idx.npy"
    assert main(["encode", str(run), "--indices", "--out", str(out)]) == 0
    indices = torch.from_numpy(np.load(out))
    x = torch.from_numpy(np.load(data))
    assert torch.equal(indices, model.encode_indices(x))


def test_fsq_normalises_each_code_dimension_before_the_bound():
    q = quantizer("fsq", levels=(8, 5, 5, 5))
    v = torch.randn(4000, 4) * 3 + 40  # pre-activations drifted far into tanh's saturation
    out = q.quantize(v)
    plain = quantizer("fsq", levels=(8, 5, 5, 5), pre_norm="none").quantize(v)
    # Normalised, the vectors spread over the grid; raw, they sit in its corners.
    assert out.indices.unique().numel() > 100 and plain.indices.unique().numel() == 1
    q.eval()  # at test time the running statistics define a fixed affine map per dimension
    n = q.norm
    expected = (v - n.running_mean) / torch.sqrt(n.running_var + n.eps) * n.weight + n.bias
    assert torch.allclose(q.normalise(v), expected, atol=1e-5)
    assert torch.equal(q.quantize(v).indices, q.quantize(v).indices)
    q.train()  # one training vector has no batch statistics: the running ones serve
    assert torch.allclose(q.normalise(v[:1]), expected[:1], atol=1e-5)


def test_fsq_saved_without_the_normalize_field_loads_as_it_was_written():
    from aekit.models.config import ModelConfig

    saved = aekit.build("fsq", (1, 8, 8), body="mlp").config.to_dict()
    del saved["bottleneck"]["pre_norm"]  # a config written before the option existed
    config = ModelConfig.from_dict(saved)
    assert config.bottleneck.options.pre_norm == "none"
    assert aekit.build("fsq", (1, 8, 8)).config.bottleneck.options.pre_norm == "batch"


def test_fsq_on_an_mlp_uses_far_more_of_its_grid_than_the_plain_bound():
    """Mentzer et al. 2024: FSQ does not collapse. Without bounded pre-activations an MLP
    drifts into tanh's saturation (module docstring) and uses a small part of the grid."""
    from aekit.data import DataConfig, load_data
    from aekit.eval import evaluate
    from aekit.train import TrainConfig, Trainer

    splits = load_data(DataConfig(source="digits"))
    result = {}
    for pre_norm in ("none", "batch"):
        torch.manual_seed(0)
        model = aekit.build("fsq", splits.train.shape, body="mlp", pre_norm=pre_norm)
        config = TrainConfig(epochs=10, batch_size=64, lr=1e-3, seed=0, progress=False)
        Trainer(model, splits.train, None, config).fit()
        result[pre_norm] = evaluate(model, splits.test)
    usage = {name: r["codebook_usage"] for name, r in result.items()}
    assert usage["batch"] > 0.3 and usage["batch"] > 3 * usage["none"], usage
    assert result["batch"]["mse"] < 0.7 * result["none"]["mse"]
