"""Self-supervised objectives, the CPU bf16 switch, backbone snapshots and the feature choice."""

import numpy as np
import pytest
import torch

from as3l_plugin.errors import InputError, ParameterError
from as3l_plugin.features.backbone import build_backbone, load_backbone
from as3l_plugin.features.choose import (choose_features, hog_features, pixel_features,
                                         resolve_criterion, stability_score)
from as3l_plugin.features.objectives import OBJECTIVES, build_objective
from as3l_plugin.features.simsiam import SimSiam
from as3l_plugin.precision import (autocast_factory, check_cpu_bf16, cpu_bf16_supported,
                                   use_cpu_bf16)

from test_features import fast, tiny_gray

torch.set_num_threads(1)


# --------------------------------------------------------------------------- precision
@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("auto", "auto"),
                                             ("TRUE", True), ("false", False)])
def test_check_cpu_bf16_accepts(value, expected):
    assert check_cpu_bf16(value) == expected


@pytest.mark.parametrize("value", ["yes", 1, None, "bf16"])
def test_check_cpu_bf16_rejects(value):
    with pytest.raises(ParameterError, match="cpu_bf16"):
        check_cpu_bf16(value)


def test_use_cpu_bf16_only_on_cpu():
    assert use_cpu_bf16(True, "cuda:0") is False
    assert use_cpu_bf16("auto", "cpu") is cpu_bf16_supported()
    assert use_cpu_bf16(False, "cpu") is False and use_cpu_bf16(True, "cpu") is True


def test_autocast_factory_runs_linear_in_bf16():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with autocast_factory(True)():
        assert lin(x).dtype == torch.bfloat16
    with autocast_factory(False)():
        assert lin(x).dtype == torch.float32


# --------------------------------------------------------------------------- objectives
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("bf16", [False, True])
def test_objective_loss_is_finite_and_trains_the_backbone(name, bf16):
    torch.manual_seed(0)
    m = build_objective(name, build_backbone("cnn4"), temperature=0.5)
    x1, x2 = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    with autocast_factory(bf16)():
        loss, z1 = m(x1, x2)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.dtype == torch.float32
    assert z1.shape[0] == 6
    loss.backward()
    grads = [p.grad for k, p in m.backbone.named_parameters() if not k.startswith("classifier.")]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    assert sum(len(g["params"]) for g in m.param_groups()) == len(list(m.parameters()))


def test_simsiam_objective_keeps_simsiam_state_dict_keys():
    """Checkpoints written before objectives existed keep loading."""
    a = build_objective("simsiam", build_backbone("cnn4"))
    b = SimSiam(build_backbone("cnn4"))
    assert list(a.state_dict()) == list(b.state_dict())


def test_unknown_objective_is_a_parameter_error(tmp_path):
    with pytest.raises(ParameterError, match="objective='byol'"):
        build_objective("byol", build_backbone("cnn4"))
    with pytest.raises(ParameterError, match="objective"):
        fast(objective="byol").fit(tiny_gray(), tmp_path)
    with pytest.raises(ParameterError, match="cpu_bf16"):
        fast(cpu_bf16="maybe").fit(tiny_gray(), tmp_path)


@pytest.mark.parametrize("objective", ["simclr", "vicreg"])
def test_pretrain_with_other_objectives_writes_a_loadable_backbone(tmp_path, objective):
    tr = fast(objective=objective, epochs=2, snapshot_epochs=(1,)).fit(tiny_gray(), tmp_path)
    ck = torch.load(tmp_path / "checkpoint.pth", weights_only=False)
    assert ck["config"]["objective"] == objective
    b, meta = load_backbone(tmp_path / "backbone.pth", net="cnn4")
    assert meta["epochs"] == 2
    snap, smeta = load_backbone(tmp_path / "backbone_e1.pth", net="cnn4")
    assert smeta["epochs"] == 1
    # the snapshot is the epoch-1 encoder, not the final one
    assert any(not torch.equal(v, tr.backbone_.state_dict()[k])
               for k, v in snap.state_dict().items() if v.is_floating_point())


def test_simsiam_config_has_no_objective_key(tmp_path):
    fast().fit(tiny_gray(), tmp_path)
    assert "objective" not in torch.load(tmp_path / "checkpoint.pth",
                                         weights_only=False)["config"]


def test_objective_change_is_refused_on_resume(tmp_path):
    from as3l_plugin.errors import StaleInputError
    fast().fit(tiny_gray(), tmp_path)
    with pytest.raises(StaleInputError, match="objective"):
        fast(objective="simclr").fit(tiny_gray(), tmp_path)


@pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no native bfloat16")
def test_cpu_bf16_switch_changes_the_arithmetic(tmp_path):
    a = fast(cpu_bf16=False).fit(tiny_gray(), tmp_path / "a").backbone_.state_dict()
    b = fast(cpu_bf16=True).fit(tiny_gray(), tmp_path / "b").backbone_.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


# --------------------------------------------------------------------------- feature choice
def _blobs_and_noise(n=600, k=6, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(k, d))
    y = np.arange(n) % k
    good = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    noise = rng.normal(size=(n, d)).astype(np.float32)
    return good, noise


def _views(n=600, k=6, seed=0):
    """Two views of the same blobs (a rotation plus noise) and a pure-noise candidate."""
    good, noise = _blobs_and_noise(n, k, seed=seed)
    rng = np.random.default_rng(seed + 1)
    Q, _ = np.linalg.qr(rng.normal(size=(good.shape[1], good.shape[1])))
    other = (good @ Q + rng.normal(scale=1.5, size=good.shape)).astype(np.float32)
    return good, other, noise


def _self_made(X, k, seed=0):
    """X pulled onto its own K-means centres: tight clusters the other views do not share
    (what Eq. 1 does to features whose clusters are arbitrary)."""
    from as3l_plugin.clustering import kmeans
    lab = kmeans(X, k, seed=seed).labels
    C = np.stack([X[lab == c].mean(0) for c in range(k)])
    return (20 * C[lab] + 0.1 * X).astype(np.float32)


def test_choose_features_prefers_shared_clusters_and_is_deterministic():
    good, other, noise = _views()
    cand = {"noise": noise, "good": good, "other": other}
    name, scores = choose_features(cand, 6, seed=0)
    assert name in ("good", "other") and scores["noise"] < min(scores["good"], scores["other"])
    assert choose_features(cand, 6, seed=0) == (name, scores)


def test_cross_view_rejects_self_made_clusters_that_stability_prefers():
    good, other, noise = _views()
    cand = {"made": _self_made(noise, 6), "good": good, "other": other}
    name, scores = choose_features(cand, 6, seed=0)
    assert name != "made" and scores["made"] < min(scores["good"], scores["other"])
    _, stab = choose_features(cand, 6, seed=0, criterion="stability")
    assert stab["made"] > 0.99  # stability cannot tell them apart


def test_choose_features_ties_follow_the_preference():
    good, _, noise = _views()
    name, scores = choose_features({"pixels": good, "self": good.copy(), "noise": noise}, 6)
    assert scores["pixels"] == pytest.approx(scores["self"]) and name == "self"


def test_choose_features_bad_input():
    good, other, noise = _views()
    with pytest.raises(InputError, match="different row counts"):
        choose_features({"a": good, "b": noise[:10], "c": other}, 6)
    with pytest.raises(ParameterError, match="budget"):
        choose_features({"a": good, "b": noise, "c": other}, 1)
    with pytest.raises(InputError, match="no candidate"):
        choose_features({}, 6)
    with pytest.raises(ParameterError, match="at least 3 candidates"):
        choose_features({"a": good, "b": noise}, 6)
    with pytest.raises(ParameterError, match="criterion"):
        choose_features({"a": good, "b": noise, "c": other}, 6, criterion="silhouette")
    assert choose_features({"a": good, "b": noise}, 6, criterion="stability")[0] == "a"


def test_stability_score_subsamples_rows():
    good, _ = _blobs_and_noise(n=900)
    assert stability_score(good, 6, max_rows=300) > 0.9


def test_pixel_features_shape_dtype_and_sign_convention():
    x = np.random.default_rng(0).integers(0, 256, size=(40, 6, 6), dtype=np.uint8)
    P = pixel_features(x, dim=5)
    assert P.shape == (40, 5) and P.dtype == np.float32
    np.testing.assert_array_equal(P, pixel_features(x.copy(), dim=5))
    assert np.allclose(P.mean(axis=0), 0, atol=1e-5)


def test_judge_scores_follow_the_outside_view_and_twins_cannot_help_each_other():
    """The ``judge`` criterion: one outside view scores every candidate, so two near twins
    with self-made clusters (``self`` and its Eq. 1 copy) gain nothing from each other."""
    good, other, noise = _views()
    made = _self_made(noise, 6)
    twin = (made + np.random.default_rng(5).normal(scale=0.5, size=made.shape)).astype(np.float32)
    cand = {"made": made, "twin": twin, "good": good}
    name, scores = choose_features(cand, 6, seed=0, judge=other)
    assert name == "good" and scores["good"] > max(scores["made"], scores["twin"]) + 0.5
    assert choose_features(cand, 6, seed=0, judge=other) == (name, scores)
    # the same twins fool cross-view agreement, where each judges the other
    assert choose_features(cand, 6, seed=0, criterion="cross_view")[0] != "good"
    assert resolve_criterion(None, other) == "judge"
    assert resolve_criterion(None, None) == "cross_view"
    assert resolve_criterion("agreement") == "cross_view"


def test_judge_scores_bad_input():
    good, other, noise = _views()
    cand = {"a": good, "b": noise}
    with pytest.raises(InputError, match="judge of shape"):
        choose_features(cand, 6, judge=other[:10])
    with pytest.raises(ParameterError, match="judge="):
        choose_features(cand, 6, criterion="judge")
    with pytest.raises(ParameterError, match="rounds"):
        choose_features(cand, 6, judge=other, rounds=0)
    assert choose_features(cand, 6, judge=other, rounds=1)[0] == "a"  # two candidates suffice


def test_hog_features_shapes_and_colour():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    big = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for X, d in ((small, 36), (big, 324)):
        H = hog_features(X)
        assert H.shape == (5, d) and H.dtype == np.float32 and np.isfinite(H).all()
    rgb = np.repeat(big[..., None], 3, axis=3)
    np.testing.assert_allclose(hog_features(rgb), hog_features(big), atol=1e-6)
    with pytest.raises(InputError, match="images of shape"):
        hog_features(big.reshape(5, -1))
