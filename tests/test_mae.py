"""The masked autoencoder: patches laid out as the patch embedding reads them, masking that
hides exactly its share and that the encoder never sees through, the loss on hidden patches
alone with its two reference values, the normalised targets undone for display, a
deterministic `encode` over every patch, the fine-tuning probe, and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import aekit
from aekit.cli import main
from aekit.errors import AekitError
from aekit.eval.probes import finetune
from aekit.objectives import ForwardPass
from aekit.patches import (
    Masked,
    Tokens,
    normalise_patches,
    patchify,
    unpatchify,
    visible_patches,
)

SMALL = dict(patch=2, depth=1, width=16, heads=2, decoder_width=8, decoder_depth=1)


def small_mae(**options):
    torch.manual_seed(0)
    return aekit.build("mae", (1, 8, 8), **{**SMALL, **options})


def test_patchify_is_the_patch_embeddings_layout_and_unpatchify_inverts_it():
    torch.manual_seed(0)
    x = torch.rand(3, 2, 6, 8)
    patches = patchify(x, 2)
    assert patches.shape == (3, 12, 8)
    assert torch.equal(unpatchify(patches, (3, 4), 2), x)
    # A conv of kernel = stride = p is one matrix product per patch in this layout.
    conv = torch.nn.Conv2d(2, 5, kernel_size=2, stride=2)
    by_conv = conv(x).flatten(2).transpose(1, 2)
    by_patches = patches @ conv.weight.reshape(5, -1).T + conv.bias
    torch.testing.assert_close(by_conv, by_patches)


def test_normalised_patches_have_zero_mean_and_unit_variance():
    x = torch.rand(4, 1, 8, 8) * 3 + 1
    t = normalise_patches(patchify(x, 4))
    torch.testing.assert_close(t.mean(-1), torch.zeros(4, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.var(-1, unbiased=False), torch.ones(4, 4), atol=1e-4, rtol=0)


def test_masking_hides_its_share_of_distinct_patches_per_example():
    torch.manual_seed(1)
    masked = Masked(torch.zeros(64, 1, 8, 8), 0.75)
    keep = masked.keep_indices(16)
    assert keep.shape == (64, visible_patches(16, 0.75)) == (64, 4)
    assert all(len(set(row.tolist())) == 4 for row in keep)
    assert len({tuple(sorted(row.tolist())) for row in keep}) > 50  # each its own mask
    counts = torch.bincount(keep.flatten(), minlength=16).float()
    assert counts.min() > 0  # every place gets shown to some example
    assert torch.equal(keep, masked.keep_indices(16))  # drawn once
    every = Masked.every_patch(torch.zeros(2, 1, 8, 8)).keep_indices(16)
    assert torch.equal(every, torch.arange(16).expand(2, -1))
    assert visible_patches(49, 0.75) == 12 and visible_patches(4, 0.99) == 1


def test_the_encoder_never_sees_the_hidden_patches_and_runs_on_the_visible_only():
    model = small_mae().train()
    x = torch.rand(3, 1, 8, 8)
    keep = torch.tensor([[0, 5, 10, 15], [1, 2, 3, 4], [15, 14, 13, 12]])
    changed = x.clone()
    hidden = Tokens(torch.zeros(3, 4, 1), keep, 16).hidden()
    pixels = unpatchify(hidden[:, :, None].expand(-1, -1, 4), (4, 4), 2).bool()
    changed[pixels] = torch.rand(int(pixels.sum()))
    seen = []
    hook = model.encoder.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    a = model.encoder(Masked(x, 0.75, keep))
    b = model.encoder(Masked(changed, 0.75, keep))
    hook.remove()
    assert torch.equal(a.values, b.values) and a.values.shape == (3, 4, model.latent_dim)
    assert seen == [(3, 4, 16), (3, 4, 16)]  # 4 of 16 tokens through the blocks
    bad = Masked(x, 0.75, torch.tensor([[0, 16]] * 3))
    with pytest.raises(AekitError, match=r"outside 0\.\.15"):
        model.encoder(bad)


def forward_pass(model, x, keep, params):
    tokens = Tokens(torch.zeros(len(x), keep.shape[1], model.latent_dim), keep, 16)
    b = model.bottleneck(tokens)
    return ForwardPass(x, b, params, model.decoder, model.likelihood, x)


def test_the_loss_counts_the_hidden_patches_alone_and_its_references():
    model = small_mae()
    torch.manual_seed(2)
    x, params = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    keep = torch.tensor([[0, 1, 2, 3], [3, 7, 11, 15]])
    out = model.objective(forward_pass(model, x, keep, params), None)
    hidden = forward_pass(model, x, keep, params).bottleneck.z.hidden().bool()
    err = (patchify(params, 2) - patchify(x, 2)).pow(2).mean(-1)
    torch.testing.assert_close(out.loss, err[hidden].mean())
    # Changing the prediction of a visible patch leaves the loss as it was.
    visible = unpatchify((~hidden).float()[:, :, None].expand(-1, -1, 4), (4, 4), 2).bool()
    moved = params.clone()
    moved[visible] += 5
    assert torch.equal(model.objective(forward_pass(model, x, keep, moved), None).loss, out.loss)
    # The references are the loss of those two predictions.
    zero = model.objective(forward_pass(model, x, keep, torch.zeros_like(x)), None)
    torch.testing.assert_close(out.terms["loss_predict_zero"], zero.loss)
    means = unpatchify(patchify(x, 2).mean(-1, keepdim=True).expand(-1, -1, 4), (4, 4), 2)
    flat = model.objective(forward_pass(model, x, keep, means), None)
    torch.testing.assert_close(out.terms["loss_patch_mean"], flat.loss)
    assert out.terms["masked_mse"] == out.loss  # without norm-pix: the same units


def test_norm_pix_targets_are_normalised_and_undone_for_display():
    model = small_mae(norm_pix=True)
    torch.manual_seed(3)
    x = torch.rand(2, 1, 8, 8)
    keep = torch.tensor([[0, 1, 2, 3], [3, 7, 11, 15]])
    target = unpatchify(normalise_patches(patchify(x, 2)), (4, 4), 2)
    perfect = model.objective(forward_pass(model, x, keep, target), None)
    assert float(perfect.loss) == 0 and float(perfect.terms["masked_mse"]) < 1e-10
    torch.testing.assert_close(model.objective.as_data(target, x), x, atol=1e-5, rtol=0)
    zero = model.objective(forward_pass(model, x, keep, torch.zeros_like(x)), None)
    # With normalised targets predicting zero is predicting each patch's mean: ~1 a patch.
    torch.testing.assert_close(zero.loss, zero.terms["loss_patch_mean"])
    assert 0.9 < float(zero.loss) <= 1


def test_encode_is_deterministic_and_the_mean_of_every_patchs_code():
    model = small_mae().train()
    x = torch.rand(5, 1, 8, 8)
    code = model.encode(x)
    assert torch.equal(code, model.encode(x)) and code.shape == (5, 16)
    tokens = model.encoder(Masked.every_patch(x))
    torch.testing.assert_close(code, tokens.values.mean(1), atol=1e-6, rtol=1e-5)


def test_a_fixed_mask_gives_the_same_loss_and_evaluation_masks_by_seed():
    model = small_mae().train()
    x = torch.rand(3, 1, 8, 8)
    keep = torch.tensor([[0, 5, 10, 15]] * 3)
    with model.corruption.fixed(keep):
        a, b = model(x), model(x)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.bottleneck.z.keep, keep)
    assert model(x).bottleneck.z.keep.shape == (3, 4)  # the fixed mask ended with the block
    data = aekit.data.TensorData(torch.rand(40, 1, 8, 8))
    first, second = aekit.evaluate(model, data), aekit.evaluate(model, data)
    assert first["loss"] == second["loss"] and abs(first["mask_ratio"] - 0.75) < 1e-6
    assert "mse" not in first  # the task's error is masked_mse


def test_every_parameter_trains_and_the_parts_refuse_what_they_cannot_do():
    model = small_mae().train()
    model(torch.rand(4, 1, 8, 8)).loss.backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    with pytest.raises(AekitError, match="cannot be decoded"):
        model.decode(torch.zeros(2, 16))
    with pytest.raises(AekitError, match="no codes to sample"):
        model.sample(2)
    with pytest.raises(AekitError, match="--body vit --token-decoder"):
        aekit.build("ae", (1, 8, 8), 4, corruption="patches")
    with pytest.raises(AekitError, match="--token-decoder"):
        aekit.build("ae", (1, 8, 8), objective="masked-patches", body="vit", **SMALL)
    with pytest.raises(AekitError, match="takes no condition"):
        aekit.build("mae", (1, 8, 8), condition_classes=3, **SMALL)
    for refused in ({"bottleneck": "gaussian"}, {"prior": "normal"}):
        with pytest.raises(AekitError, match="the identity bottleneck"):
            aekit.build("mae", (1, 8, 8), **SMALL, **refused)
    with pytest.raises(AekitError, match="mask_ratio must be a fraction"):
        aekit.build("mae", (1, 8, 8), mask_ratio=1.0, **SMALL)


def test_the_finetuning_probe_learns_separable_classes_and_leaves_the_model_alone():
    model = small_mae()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(4)
    y = torch.arange(200) % 2
    x = torch.rand(200, 1, 8, 8) * 0.2
    x[y == 1, :, :4] += 0.8  # the top half lit
    result = finetune(model, x[:160], y[:160], x[160:], y[160:], epochs=20, batch_size=32)
    assert result.accuracy == 1.0 and "160 labelled training examples" in result.protocol
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    again = finetune(model, x[:160], y[:160], x[160:], y[160:], epochs=1, seed=1)
    assert again == finetune(model, x[:160], y[:160], x[160:], y[160:], epochs=1, seed=1)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(240) % 2
    x = rng.random((240, 8, 8)) * 0.3
    x[y == 1, :4] += 0.7
    np.save(tmp_path / "x.npy", (x * 255).astype(np.uint8))
    np.save(tmp_path / "y.npy", y)
    return tmp_path


def test_trains_reports_and_probes_from_the_command_line(images, capsys):
    run = images / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    argv = ["train", "mae", "--data", images / "x.npy", "--labels", images / "y.npy",
            "--out", run, "--epochs", "2", "--no-progress", "--norm-pix", "--mask-ratio", "0.5",
            *flags]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["corruption"]["mask_ratio"] == 0.5 and config["objective"]["norm_pix"]
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    assert {"masked_mse", "loss_predict_zero", "loss_patch_mean"} <= set(metrics)
    page = (run / "report.html").read_text()
    assert "masked_predictions.png" in page and "for predicting zero" in page
    assert "traversal.png" not in page and "samples.png" not in page
    capsys.readouterr()
    argv = ["eval", run, "--probe", "knn,finetune", "--finetune-epochs", "1"]
    assert main([str(a) for a in argv]) == 0
    assert "probe finetune: accuracy" in capsys.readouterr().out
    probes = json.loads((run / "eval.json").read_text())["metrics"]["probe"]
    assert {"finetune", "knn20_cosine"} <= set(probes)
    assert main(["eval", str(run), "--finetune-epochs", "2"]) == 1
    assert "pass --probe finetune" in capsys.readouterr().err
    loaded = aekit.load(run)
    x = torch.rand(2, 1, 8, 8)
    assert loaded.reconstruct(x).shape == x.shape
