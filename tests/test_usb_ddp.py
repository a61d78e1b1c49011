"""Multi-process training (USB's ``multiprocessing_distributed``) on CPU with gloo, through the
plugin entry: every rank's prior lookup by ``idx_ulb`` is correct.

Two processes train ``as3l_flexmatch`` (mode ``update``) on digits. A recording hook in each
process wraps the prior hook's ``posterior`` and compares, for every unlabeled batch, the prior
rows actually mixed into the pseudo-label with the rows expected from the *files* — the prior
``.npy`` and the index file, aligned independently of the plugin
(``concat(lb, others)[idx_ulb]``, USB's layout). It also records which global indices each
rank drew and the prior each rank holds after the refreshes (computed on rank 0, broadcast).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from semilearn.core.hooks import Hook

pytestmark = pytest.mark.slow  # two training processes

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "usb_configs" / "digits" / "as3l_flexmatch_digits_10_0.yaml"


class PriorLookupRecorder(Hook):
    """Checks every ``posterior`` call of the prior hook against the files; writes
    ``<save_dir>/<save_name>/ddp_rank<r>.json`` at the end of the run."""

    def __init__(self, prior_file: str, lb_index_file: str):
        super().__init__()
        self.prior_file, self.lb_index_file = prior_file, lb_index_file

    def before_run(self, algorithm):
        file_prior = np.load(self.prior_file)
        lb = np.load(self.lb_index_file)
        # USB's layout with include_lb_to_ulb: labeled items first, then the rest in order
        self.orig = np.concatenate([lb, np.setdiff1d(np.arange(len(file_prior)), lb)])
        self.file_prior = torch.as_tensor(file_prior)
        self.records, self.mismatch, self.checked = [], 0, 0
        hook = algorithm.prior_hook
        inner = hook.posterior

        def posterior(probs, idx_ulb, prior_ulb=None):
            idx = idx_ulb.detach().cpu().long()
            used = hook.batch_prior(idx_ulb, prior_ulb, probs.device).cpu()
            current = hook.prior_ if hook.version_ else self.file_prior
            expect = current[torch.as_tensor(self.orig)[idx]]
            self.checked += 1
            self.mismatch += int(not torch.allclose(used, expect, atol=0, rtol=0))
            if prior_ulb is not None and hook.version_ == 0:  # the batch's own rows too
                self.mismatch += int(not torch.equal(prior_ulb.cpu(), expect))
            self.records.append({"it": int(algorithm.it), "version": int(hook.version_),
                                 "idx": idx.tolist()})
            return inner(probs, idx_ulb, prior_ulb)

        hook.posterior = posterior

    def after_run(self, algorithm):
        import torch.distributed as dist
        hook = algorithm.prior_hook
        out = {
            "rank": dist.get_rank() if dist.is_initialized() else 0,
            "world_size": dist.get_world_size() if dist.is_initialized() else 1,
            "checked": self.checked, "mismatch": self.mismatch, "records": self.records,
            "version": int(hook.version_),
            "prior_sha": hashlib.sha256(hook.prior_.numpy().tobytes()).hexdigest(),
            "ulb_dest_len": int(algorithm.args.ulb_dest_len),
            "ddp": type(algorithm.model).__name__,
        }
        path = Path(algorithm.save_dir) / algorithm.save_name / f"ddp_rank{out['rank']}.json"
        path.write_text(json.dumps(out))


def test_two_cpu_processes_look_up_the_prior_by_global_idx_ulb(tmp_path):
    from as3l_plugin.datasets import load_dataset
    from as3l_plugin.usb.train import train

    y = load_dataset("digits").y_train
    n = len(y)
    rng = np.random.default_rng(0)
    lb = np.array([rng.choice(np.flatnonzero(y == c)) for c in range(10)], dtype=np.int64)
    # a prior whose every row is distinct, so a wrong row cannot match by accident
    prior = rng.dirichlet(np.ones(10), size=n).astype(np.float32)
    prior /= prior.sum(1, keepdims=True)
    np.save(tmp_path / "lb.npy", lb)
    np.save(tmp_path / "prior.npy", prior)

    iters = 6
    res = train(str(CONFIG), hooks=[PriorLookupRecorder(str(tmp_path / "prior.npy"),
                                                        str(tmp_path / "lb.npy"))],
                multiprocessing_distributed=True, cpu_procs_per_node=2, dist_backend="gloo",
                save_dir=str(tmp_path / "runs"), lb_index_file=str(tmp_path / "lb.npy"),
                prior_file=str(tmp_path / "prior.npy"), use_pretrain=False,
                num_train_iter=iters, num_eval_iter=iters, num_log_iter=iters, batch_size=2,
                uratio=4, eval_batch_size=512, prior_T=2, prior_update_interval=3,
                prior_update_ks=[10, 20], resume=False)
    run = Path(res["save_dir"])
    ranks = [json.loads((run / f"ddp_rank{r}.json").read_text()) for r in (0, 1)]

    for r, rec in enumerate(ranks):
        assert rec["rank"] == r and rec["world_size"] == 2
        assert rec["ddp"] == "DistributedDataParallel"
        assert rec["ulb_dest_len"] == n  # every rank holds the whole unlabeled set
        assert rec["checked"] == iters and rec["mismatch"] == 0
        assert [x["version"] for x in rec["records"]] == [0, 0, 1, 1, 1, 2]  # refreshes at 2, 5
    # the refreshed prior (rank 0 computes, broadcast) is identical on both ranks
    assert ranks[0]["prior_sha"] == ranks[1]["prior_sha"] and ranks[0]["version"] == 2
    # the ranks draw different samples at each step, from the whole global index range
    for a, b in zip(ranks[0]["records"], ranks[1]["records"]):
        assert a["it"] == b["it"] and not set(a["idx"]) & set(b["idx"])
    for rec in ranks:
        drawn = np.concatenate([x["idx"] for x in rec["records"]])
        assert drawn.min() >= 0 and drawn.max() < n
        assert (drawn < n // 2).any() and (drawn >= n // 2).any()
    assert res["final_it"] == iters
