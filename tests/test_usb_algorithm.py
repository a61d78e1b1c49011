"""as3l_flexmatch: posterior and mask, the T switch, remove/update, the prior dataset, config errors."""

from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("semilearn")

import as3l_plugin.usb  # noqa: E402,F401
from as3l_plugin.errors import ConfigError, PriorError  # noqa: E402
from as3l_plugin.usb.algorithm import AS3LFlexMatch, check_prior_args, int_list  # noqa: E402
from as3l_plugin.usb.prior_data import PriorDataset, check_prior_file  # noqa: E402
from as3l_plugin.usb.hooks import PriorHook  # noqa: E402
from as3l_plugin.usb.train import build_algorithm, get_config  # noqa: E402

TINY = Path(__file__).with_name("usb_tiny.yaml")
N_DIGITS = 1437


def digits_prior(path, confident=0.9, seed=0):
    """A prior that puts ``confident`` on the true class of every digits train sample."""
    from as3l_plugin.datasets import load_dataset
    y = load_dataset("digits").y_train
    p = np.full((len(y), 10), (1 - confident) / 9, np.float32)
    p[np.arange(len(y)), y] = confident
    np.save(path, p)
    return p, y


@pytest.fixture(scope="module")
def prior_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prior") / "prior.npy"
    digits_prior(path)
    return str(path)


def tiny_args(tmp_path, prior_file=None, **kw):
    kw.setdefault("save_dir", str(tmp_path / "runs"))
    kw.setdefault("gpu", "cpu")
    return get_config(TINY, prior_file=prior_file, **kw)


# --------------------------------------------------------------------------- registry, args
def test_registered_with_typed_arguments():
    from semilearn.core.utils import ALGORITHMS
    assert ALGORITHMS["as3l_flexmatch"] is AS3LFlexMatch
    args = {a.name: a for a in AS3LFlexMatch.get_argument()}
    assert {"--prior_file", "--prior_T", "--prior_mode", "--prior_update_interval",
            "--prior_update_ks", "--p_cutoff", "--thresh_warmup"} <= set(args)
    assert args["--prior_T"].default == 6900 and args["--prior_T"].type is int
    assert int_list("10,20, 30") == [10, 20, 30] and int_list([5]) == [5]


def test_cli_flags_reach_the_config(tmp_path, prior_file):
    args = get_config(TINY, argv=["--prior_T", "7", "--prior_update_ks", "10,20", "--p_cutoff", "0.9"],
                      prior_file=prior_file)
    assert args.prior_T == 7 and args.prior_update_ks == [10, 20] and args.p_cutoff == 0.9
    cfg = check_prior_args(args)
    assert cfg.T == 7 and cfg.ks == (10, 20) and cfg.mode == "update"


@pytest.mark.parametrize("key, value, match", [
    ("prior_mode", "keep", "prior_mode"),
    ("prior_T", -1, "prior_T"),
    ("prior_T", 2.5, "prior_T"),
    ("prior_update_interval", 0, "prior_update_interval"),
    ("prior_update_ks", [1, 10], "prior_update_ks"),
    ("prior_update_features", "cache", "prior_update_features"),
    ("prior_file", None, "prior_file: is required"),
    ("prior_file", "/nonexistent/prior.npy", "prior_file: file not found"),
])
def test_bad_prior_config_is_a_config_error(tmp_path, prior_file, key, value, match):
    args = tiny_args(tmp_path, **{"prior_file": prior_file, key: value})
    with pytest.raises(ConfigError, match=match):
        build_algorithm(args)


@pytest.mark.parametrize("shape, match", [((N_DIGITS - 1, 10), "rows"), ((N_DIGITS, 9), "columns")])
def test_mismatched_prior_fails_at_start_up(tmp_path, shape, match):
    path = tmp_path / "bad_prior.npy"
    np.save(path, np.full(shape, 1.0 / shape[1], np.float32))
    with pytest.raises(PriorError, match=match) as err:
        build_algorithm(tiny_args(tmp_path, str(path)))
    assert str(path) in str(err.value)


def test_check_prior_rejects_unnormalised_and_negative_rows():
    p = np.full((4, 3), 1 / 3, np.float32)
    check_prior_file(p, n_samples=4, num_classes=3)
    with pytest.raises(PriorError, match="sum to 1"):
        check_prior_file(p * 2, n_samples=4, num_classes=3)
    q = p.copy()
    q[0] = [1.5, -0.5, 0.0]
    with pytest.raises(PriorError, match="negative"):
        check_prior_file(q, n_samples=4, num_classes=3)


# --------------------------------------------------------------------------- posterior, mask
def make_hook(T=5, mode="remove", **kw):
    rng = np.random.RandomState(0)
    prior = rng.dirichlet(np.ones(4), size=12).astype(np.float32)
    orig_index = np.concatenate([[3, 7], np.arange(12)])  # labeled rows 3, 7 first
    return PriorHook(prior, orig_index, T=T, mode=mode, **kw), prior, orig_index


def test_posterior_is_normalised_prior_plus_probs_indexed_through_orig_index():
    hook, prior, orig = make_hook()
    probs = torch.softmax(torch.randn(5, 4), dim=-1)
    idx = torch.tensor([0, 1, 2, 9, 13])
    post = hook.posterior(probs, idx)
    expected = prior[orig[idx.numpy()]] + probs.numpy()
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(post.numpy(), expected, rtol=1e-6)
    # the batch's prior_ulb (from PriorDataset) gives the same answer
    post2 = hook.posterior(probs, idx, torch.from_numpy(prior[orig[idx.numpy()]]))
    torch.testing.assert_close(post, post2)
    assert hook.table_shape == (14, 4)


def test_flexmatch_mask_and_pseudo_label_follow_the_posterior():
    """FlexMatch's own masking and pseudo-labelling hooks fed through the prior slot."""
    from semilearn.algorithms.flexmatch.utils import FlexMatchThresholdingHook
    from semilearn.algorithms.hooks import PseudoLabelingHook
    prior = np.full((3, 3), 0.0, np.float32)
    prior[:, 2] = 1.0  # the prior is sure every sample is class 2
    hook = PriorHook(prior, np.arange(3), T=10)
    probs = torch.tensor([[0.96, 0.02, 0.02],    # confident class 0
                          [0.40, 0.30, 0.30],    # unsure
                          [0.05, 0.05, 0.90]])   # agrees with the prior
    idx = torch.arange(3)
    alg = NS(it=0, p_cutoff=0.95)
    mask_hook = FlexMatchThresholdingHook(ulb_dest_len=3, num_classes=3, thresh_warmup=False)
    mask_hook.classwise_acc = torch.ones(3)  # threshold = p_cutoff for every class

    hook.set_batch(idx)
    post = hook.dist_align(alg, probs_x_ulb=probs)
    mask = mask_hook.masking(alg, logits_x_ulb=post, softmax_x_ulb=False, idx_ulb=idx)
    label = PseudoLabelingHook().gen_ulb_targets(alg, logits=post, use_hard_label=True, softmax=False)
    # posterior: (0.48, .01, .51), (.2, .15, .65), (.025, .025, .95)
    np.testing.assert_array_equal(label.numpy(), [2, 2, 2])
    np.testing.assert_array_equal(mask.numpy(), [0.0, 0.0, 1.0])
    # without the prior (it > T, mode remove) FlexMatch sees the raw probabilities
    alg.it = 10
    raw = hook.dist_align(alg, probs_x_ulb=probs)
    assert raw is probs
    mask_hook.selected_label[:] = -1
    mask_hook.classwise_acc = torch.ones(3)
    mask = mask_hook.masking(alg, logits_x_ulb=raw, softmax_x_ulb=False, idx_ulb=idx)
    np.testing.assert_array_equal(mask.numpy(), [1.0, 0.0, 0.0])


def test_t_switch_and_update_schedule():
    hook, _, _ = make_hook(T=5, mode="remove")
    assert [hook.is_active(i) for i in (0, 4, 5, 100)] == [True, True, False, False]
    assert not any(hook.refresh_due(i) for i in range(30))
    hook, _, _ = make_hook(T=5, mode="update", update_interval=3)
    assert all(hook.is_active(i) for i in (0, 5, 100))
    assert [i for i in range(15) if hook.refresh_due(i)] == [5, 8, 11, 14]


def test_update_mode_refresh_replaces_the_prior_and_survives_state_roundtrip():
    seen = {}

    def fake_propagate(features, labeled_index, labels, num_classes, seed):
        seen.update(features=features, labeled=labeled_index, labels=labels, seed=seed)
        out = np.zeros((len(features), num_classes), np.float32)
        out[:, 1] = 1.0
        return out

    hook, prior, orig = make_hook(T=2, mode="update", update_interval=4,
                                  labeled_index=[3, 7], labeled_targets=[0, 2], seed=5,
                                  propagate_fn=fake_propagate)
    alg = NS(it=2, print_fn=lambda *a: None,
             extract_pool_features=lambda: np.arange(24, dtype=np.float32).reshape(12, 2))
    hook.before_train_step(alg)
    assert hook.version_ == 1 and hook.last_update_it_ == 2
    assert seen["seed"] == 5 and list(seen["labeled"]) == [3, 7] and seen["features"].shape == (12, 2)
    idx = torch.tensor([0, 5])
    stale_batch_prior = torch.from_numpy(prior[orig[[0, 5]]])
    # after a refresh the (stale) batch prior is ignored: lookup through idx_ulb
    np.testing.assert_array_equal(hook.batch_prior(idx, stale_batch_prior).numpy(), [[0, 1, 0, 0]] * 2)
    hook.before_train_step(alg)  # same iteration: no second refresh
    assert hook.version_ == 1
    state = hook.state_dict()
    fresh, _, _ = make_hook(T=2, mode="update", update_interval=4)
    fresh.load_state_dict(state)
    assert fresh.version_ == 1 and fresh.last_update_it_ == 2 and torch.equal(fresh.prior_, hook.prior_)
    with pytest.raises(PriorError, match="shape"):
        fresh.load_state_dict({**state, "prior": torch.zeros(3, 4)})


# --------------------------------------------------------------------------- dataset wrapper
@pytest.mark.parametrize("include", [True, False])
def test_prior_dataset_aligned_to_original_order(tmp_path, include):
    path = tmp_path / "prior.npy"
    prior = np.random.RandomState(1).dirichlet(np.ones(10), size=N_DIGITS).astype(np.float32)
    np.save(path, prior)
    from as3l_plugin.datasets import load_dataset
    x = load_dataset("digits").x_train
    alg = build_algorithm(tiny_args(tmp_path, str(path), include_lb_to_ulb=include))
    ulb = alg.dataset_dict["train_ulb"]
    assert isinstance(ulb, PriorDataset) and len(ulb) == (N_DIGITS if include else N_DIGITS - 20)
    lb_idx = alg.dataset_dict["train_lb"].orig_index
    if include:
        np.testing.assert_array_equal(ulb.orig_index[:20], lb_idx)
    else:
        assert not set(lb_idx) & set(ulb.orig_index)
    for i in (0, 5, 19, 20, 100, len(ulb) - 1):
        item = ulb[i]
        np.testing.assert_array_equal(item["prior_ulb"], prior[ulb.orig_index[i]])
        np.testing.assert_array_equal(ulb.data[i], x[ulb.orig_index[i]])  # same sample
        assert item["idx_ulb"] == i
    hook = alg.prior_hook
    idx = torch.tensor([0, 19, 20, len(ulb) - 1])
    batch = torch.from_numpy(np.stack([ulb[i]["prior_ulb"] for i in idx.tolist()]))
    torch.testing.assert_close(hook.batch_prior(idx), batch)  # hook lookup == dataset's prior


# --------------------------------------------------------------------------- train_step wiring
class _FixedLogits(torch.nn.Module):
    """A stand-in backbone: the same learnable logits for every input."""

    def __init__(self, logits):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, x, **kw):
        logits = self.w.expand(x.shape[0], -1)
        return {"logits": logits, "feat": logits}


def test_train_step_feeds_the_posterior_to_mask_and_pseudo_label(tmp_path):
    path = tmp_path / "prior.npy"
    prior, _ = digits_prior(path, confident=1.0)
    alg = build_algorithm(tiny_args(tmp_path, str(path), prior_mode="remove", prior_T=3))
    alg.model = _FixedLogits(torch.log(torch.tensor([0.5, .3, .1, .02, .02, .02, .01, .01, .01, .01])))
    calls = []
    mask_hook, pl_hook = alg.hooks_dict["MaskingHook"], alg.hooks_dict["PseudoLabelingHook"]
    orig_mask, orig_pl = mask_hook.masking, pl_hook.gen_ulb_targets

    def spy_mask(algorithm, logits_x_ulb, idx_ulb, softmax_x_ulb=True, **kw):
        calls.append(("mask", logits_x_ulb.clone(), softmax_x_ulb))
        return orig_mask(algorithm, logits_x_ulb=logits_x_ulb, idx_ulb=idx_ulb,
                         softmax_x_ulb=softmax_x_ulb, **kw)

    def spy_pl(algorithm, logits, **kw):
        calls.append(("pl", logits.clone(), kw.get("softmax")))
        return orig_pl(algorithm, logits=logits, **kw)

    mask_hook.masking, pl_hook.gen_ulb_targets = spy_mask, spy_pl
    data_lb = next(iter(alg.loader_dict["train_lb"]))
    data_ulb = next(iter(alg.loader_dict["train_ulb"]))
    batch = alg.process_batch(**data_lb, **data_ulb)
    assert "prior_ulb" in batch
    p = torch.softmax(alg.model.w.detach(), -1)
    for it, with_prior in ((0, True), (3, False)):
        calls.clear()
        alg.it = it
        _, log = alg.train_step(**batch)
        assert log["train/prior_active"] == float(with_prior)
        expected = p.expand(len(batch["idx_ulb"]), -1)
        if with_prior:
            expected = batch["prior_ulb"] + expected
            expected = expected / expected.sum(-1, keepdim=True)
        assert [c[0] for c in calls] == ["mask", "pl"] and calls[0][2] is False
        for _, seen, _ in calls:
            torch.testing.assert_close(seen, expected)


# --------------------------------------------------------------------------- pool features
def test_extract_pool_features_enters_the_training_precision_context(tmp_path, prior_file):
    """The refresh's forward pass runs in ``amp_cm()`` (USB's amp / the CPU bf16 switch)."""
    import contextlib
    alg = build_algorithm(tiny_args(tmp_path, prior_file))
    entered, active, seen = [], [], []

    @contextlib.contextmanager
    def spy_cm():
        entered.append(1)
        active.append(True)
        try:
            yield
        finally:
            active.pop()

    alg.amp_cm = spy_cm
    model = getattr(alg.ema_model, "module", alg.ema_model)
    handle = model.register_forward_hook(lambda m, i, o: seen.append(bool(active)))
    try:
        feats = alg.extract_pool_features()
    finally:
        handle.remove()
    batches = -(-N_DIGITS // int(alg.args.eval_batch_size))
    assert feats.shape == (N_DIGITS, 128) and feats.dtype == np.float32
    assert len(entered) == batches and seen == [True] * batches


def test_extract_pool_features_under_cpu_bf16_runs_in_bfloat16(tmp_path, prior_file):
    alg = build_algorithm(tiny_args(tmp_path, prior_file, cpu_bf16="true"))
    dtypes = []
    model = getattr(alg.ema_model, "module", alg.ema_model)
    handle = model.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    try:
        feats = alg.extract_pool_features()
    finally:
        handle.remove()
    assert feats.dtype == np.float32 and set(dtypes) == {torch.bfloat16}


# --------------------------------------------------------------------------- feature bank
def test_bank_refresh_uses_recorded_rows_and_extracts_only_the_unseen():
    got = {}

    def fake_propagate(features, labeled_index, labels, num_classes, seed):
        got["features"] = features.copy()
        return np.full((len(features), num_classes), 1.0 / num_classes, np.float32)

    hook, _, orig = make_hook(T=2, mode="update", update_interval=4, features="bank",
                              labeled_index=[3, 7], labeled_targets=[0, 2],
                              propagate_fn=fake_propagate)
    assert hook.uses_bank and hook.bank_ is None and (hook.bank_seen_ == -1).all()
    idx = torch.tensor([2, 3, 4, 9])  # unlabeled items -> pool rows orig[idx] = 0, 1, 2, 7
    feats = torch.arange(12, dtype=torch.bfloat16).reshape(4, 3)
    hook.record_features(idx, feats, it=1)
    rows = orig[idx.numpy()]
    np.testing.assert_array_equal(rows, [0, 1, 2, 7])
    assert hook.bank_.dtype == torch.float32 and hook.bank_.shape == (12, 3)
    np.testing.assert_array_equal(hook.bank_[rows].numpy(), feats.float().numpy())
    assert hook.bank_seen_[rows].tolist() == [1] * 4 and (np.delete(hook.bank_seen_.numpy(), rows) == -1).all()

    calls = []

    def extract(rows=None):
        calls.append(None if rows is None else list(rows))
        n = 12 if rows is None else len(rows)
        return np.full((n, 3), -1.0, np.float32)

    alg = NS(it=2, print_fn=lambda *a: None, extract_pool_features=extract)
    hook.before_train_step(alg)
    unseen = [r for r in range(12) if r not in rows]
    assert calls == [unseen] and hook.last_refresh_extracted_ == len(unseen)
    np.testing.assert_array_equal(got["features"][rows], feats.float().numpy())
    assert (got["features"][unseen] == -1).all()

    # bank_max_age: rows recorded longer ago than that are extracted again
    aged, _, _ = make_hook(T=2, mode="update", update_interval=4, features="bank", bank_max_age=3)
    aged.record_features(torch.tensor([2, 3]), torch.ones(2, 3), it=1)   # rows 0, 1
    aged.record_features(torch.tensor([4]), torch.ones(1, 3), it=5)      # row 2
    assert aged.bank_stale_rows(6).tolist() == [0, 1] + list(range(3, 12))
    assert aged.bank_stale_rows(4).tolist() == list(range(3, 12))

    # nothing recorded yet: a full extraction, as in extract mode
    empty, _, _ = make_hook(T=0, mode="update", features="bank", propagate_fn=fake_propagate)
    calls.clear()
    empty.before_train_step(NS(it=0, print_fn=lambda *a: None, extract_pool_features=extract))
    assert calls == [None] and empty.last_refresh_extracted_ == 12


def test_bank_state_roundtrip_and_extract_state_unchanged():
    hook, _, _ = make_hook(T=2, mode="update", features="bank")
    state = hook.state_dict()
    assert state["bank"] is None and (state["bank_seen"] == -1).all()
    hook.record_features(torch.tensor([0, 5]), torch.randn(2, 6), it=7)
    fresh, _, _ = make_hook(T=2, mode="update", features="bank")
    fresh.load_state_dict(hook.state_dict())
    assert torch.equal(fresh.bank_, hook.bank_) and torch.equal(fresh.bank_seen_, hook.bank_seen_)
    fresh.load_state_dict(state)  # a checkpoint taken before any step: empty bank again
    assert fresh.bank_ is None and (fresh.bank_seen_ == -1).all()
    with pytest.raises(PriorError, match="bank"):
        fresh.load_state_dict({**hook.state_dict(), "bank": torch.zeros(5, 6)})
    # extract mode: the state of before the bank, no recording
    plain, _, _ = make_hook(T=2, mode="update")
    assert not plain.uses_bank
    assert set(plain.state_dict()) == {"prior", "mode", "T", "version", "last_update_it"}
    # remove mode never refreshes: no bank either, whatever the key says
    assert not make_hook(T=2, mode="remove", features="bank")[0].uses_bank


def test_train_step_fills_the_bank_and_a_checkpoint_restores_it(tmp_path, prior_file):
    alg = build_algorithm(tiny_args(tmp_path, prior_file, prior_update_features="bank"))
    hook = alg.prior_hook
    assert hook.uses_bank and alg.prior_cfg.features == "bank"
    data_lb = next(iter(alg.loader_dict["train_lb"]))
    data_ulb = next(iter(alg.loader_dict["train_ulb"]))
    batch = alg.process_batch(**data_lb, **data_ulb)
    alg.it = 3
    out, _ = alg.train_step(**batch)
    rows = hook.orig_index[batch["idx_ulb"].long()]
    weak = out["feat"]["x_ulb_w"].detach().float()
    assert hook.bank_.shape == (N_DIGITS, weak.shape[1])
    torch.testing.assert_close(hook.bank_[rows], weak, rtol=0, atol=0)
    assert set(hook.bank_seen_[rows].tolist()) == {3}
    assert int((hook.bank_seen_ >= 0).sum()) == len(set(rows.tolist()))

    alg.epoch = 0  # set by USB's train loop; get_save_dict reads it
    alg.save_model("latest_model.pth", str(tmp_path))
    again = build_algorithm(tiny_args(tmp_path / "b", prior_file, prior_update_features="bank"))
    assert again.prior_hook.bank_ is None
    again.load_model(str(tmp_path / "latest_model.pth"))
    assert torch.equal(again.prior_hook.bank_, hook.bank_)
    assert torch.equal(again.prior_hook.bank_seen_, hook.bank_seen_)

    # the refresh: the recorded rows from the bank, the others through extract_pool_features
    seen = {}
    again.prior_hook.propagate_fn = lambda f, *a: (seen.setdefault("f", f),
                                                   np.asarray(again.prior_hook.prior_))[1]
    again.it = again.prior_hook.T
    again.prior_hook.before_train_step(again)
    unseen = np.flatnonzero(hook.bank_seen_.numpy() < 0)
    assert again.prior_hook.last_refresh_extracted_ == len(unseen)
    np.testing.assert_array_equal(seen["f"][rows.numpy()], weak.numpy())
    np.testing.assert_allclose(seen["f"][unseen], again.extract_pool_features()[unseen],
                               rtol=1e-5, atol=1e-5)


def test_extract_mode_does_not_record(tmp_path, prior_file):
    alg = build_algorithm(tiny_args(tmp_path, prior_file))
    assert alg.prior_cfg.features == "extract" and not alg.prior_hook.uses_bank
    data_lb = next(iter(alg.loader_dict["train_lb"]))
    data_ulb = next(iter(alg.loader_dict["train_ulb"]))
    alg.train_step(**alg.process_batch(**data_lb, **data_ulb))
    alg.epoch = 0  # set by USB's train loop; get_save_dict reads it
    assert alg.prior_hook.bank_ is None and "bank" not in alg.get_save_dict()["as3l_prior"]


def test_bank_is_refused_under_distributed_training(tmp_path, prior_file):
    from as3l_plugin.usb.algorithm import check_bank_world
    args = tiny_args(tmp_path, prior_file, prior_update_features="bank")
    check_prior_args(args)  # world_size 1: fine
    args.world_size = 2
    with pytest.raises(ConfigError, match="prior_update_features: =bank needs a single process"):
        check_prior_args(args)
    args.prior_update_features = "extract"
    check_prior_args(args)
    with pytest.raises(ConfigError, match="prior_update_features"):
        check_bank_world("bank", 4)
    check_bank_world("extract", 4)
