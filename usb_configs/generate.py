"""Write every USB-style config in ``usb_configs/`` from one table (the single source of truth).

    python usb_configs/generate.py           # (re)write the YAML files
    python usb_configs/generate.py --check   # exit 1 if a file differs from what it would write

The files follow USB's ``config/classic_cv/flexmatch/flexmatch_<dataset>_<labels>_<seed>.yaml``
(semilearn 0.3.2 / commit a8ec1d7): same keys, same order, same value spelling (``True``,
``None``), with the plugin's keys inserted next to their USB neighbours:

- ``prior_file, prior_T, prior_mode, prior_update_interval, prior_update_ks,
  prior_update_features`` after FlexMatch's own algorithm keys (``as3l_flexmatch`` only);
- ``use_pretrain, pretrain_path`` after ``net_from_name`` (where USB's ``train.py`` declares them);
- ``lb_index_file`` after ``dataset`` (any algorithm; absent = USB's random split).

One departure from USB's files: USB writes ``clip: 0.0``, a key nothing reads (the argument is
``clip_grad``); we write ``clip_grad: 0.0`` in its place so that editing it has an effect.

This script imports only the standard library.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: where the offline stage's outputs are expected, relative to the directory training runs in
AS3L_ROOT = "./saved_models/as3l"
PRIOR_KS = [10, 20, 30, 40, 50, 60]  # paper Sec. 4.1.3: constrained seeded K-means at these K
PRIOR_T = 6900                         # paper Sec. 4.1.3: change point T

# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------

#: per dataset: USB's values (config/classic_cv/flexmatch/*.yaml) + the paper's backbone
DATASETS = {
    "cifar10": dict(num_classes=10, img_size=32, crop_ratio=0.875, weight_decay=0.0005,
                    net="wrn_28_2", port=10004),
    # USB's cifar100 FlexMatch YAML says wrn_28_2; the paper (Sec. 4.1.3) and FlexMatch use
    # WRN-28-8 with weight decay 1e-3 for CIFAR-100.
    "cifar100": dict(num_classes=100, img_size=32, crop_ratio=0.875, weight_decay=0.001,
                     net="wrn_28_8", port=10001),
    "stl10": dict(num_classes=10, img_size=96, crop_ratio=0.875, weight_decay=0.0005,
                  net="wrn_var_37_2", port=10003),
    # CPU datasets embedded in the plugin (as3l_plugin.datasets); small CNN, no GPU.
    "digits": dict(num_classes=10, img_size=8, crop_ratio=0.875, weight_decay=0.0005,
                   net="cnn4", port=10005),
    "fashion_mnist": dict(num_classes=10, img_size=28, crop_ratio=0.875, weight_decay=0.0005,
                          net="cnn4", port=10006),
}

#: the paper's settings (Sec. 4.1): (dataset, num_labels) → short schedule; 1 label/class → update
PAPER_SETTINGS = [("cifar10", 10), ("cifar10", 40), ("cifar100", 200), ("cifar100", 400),
                  ("stl10", 20), ("stl10", 40)]
#: CPU settings: 1 and 4 labels per class
CPU_SETTINGS = [("digits", 10), ("digits", 40), ("fashion_mnist", 10), ("fashion_mnist", 40)]

STANDARD_ITERS = 1024 * 1024


def short_schedule(dataset: str, num_labels: int) -> int:
    """Paper Sec. 4.1.3: 112×1024 iterations for CIFAR-10 with 10 labels, 112×2304 otherwise."""
    return 112 * 1024 if (dataset, num_labels) == ("cifar10", 10) else 112 * 2304


def prior_mode(dataset: str, num_labels: int) -> str:
    """``update`` at 1 label per class (the paper's "very few annotations"), else ``remove``."""
    return "update" if num_labels == DATASETS[dataset]["num_classes"] else "remove"


#: CPU schedule (measured on a 2-core CPU, see usb_configs/README.md). EMA 0.99: USB's 0.999
#: averages over ~1,000 iterations, most of these short runs, so its evaluations lag.
CPU_SCHEDULE = {
    "digits": dict(batch_size=16, uratio=7, eval_batch_size=256, epoch=1, ema_m=0.99,
                   num_train_iter=1000, num_eval_iter=50, num_log_iter=50, prior_T=300,
                   prior_update_interval=100),
    # 28x28: ~2.5 CPU-s per iteration at mu 7 on one core, so mu 3 and 600 iterations
    "fashion_mnist": dict(batch_size=16, uratio=3, eval_batch_size=512, epoch=1, ema_m=0.99,
                          num_train_iter=600, num_eval_iter=100, num_log_iter=50, prior_T=200,
                          prior_update_interval=400),
}


def offline_paths(dataset: str, num_labels: int, seed: int) -> dict:
    """Expected outputs of the offline stage (``as3l select`` / ``as3l prior`` / ``as3l pretrain``)."""
    run = f"{AS3L_ROOT}/{dataset}/labels{num_labels}_seed{seed}"
    return dict(lb_index_file=f"{run}/lb_labels{num_labels}_1_seed{seed}_idx.npy",
                prior_file=f"{run}/prior.npy",
                pretrain_path=f"{AS3L_ROOT}/{dataset}/simsiam_{DATASETS[dataset]['net']}/backbone.pth")


# ---------------------------------------------------------------------------------------------
# one config
# ---------------------------------------------------------------------------------------------

def make_config(*, algorithm: str, dataset: str, num_labels: int, seed: int = 0,
                variant: str = "", schedule: str = "short") -> tuple[str, dict]:
    """Return ``(file stem, ordered dict of keys)`` of one config.

    ``algorithm`` is ``as3l_flexmatch`` or ``flexmatch``; ``variant`` ``"lbidx"`` adds
    ``lb_index_file`` to flexmatch (the sampler-swap baseline); ``schedule`` is ``short``
    (paper's 112×…), ``standard`` (1024×1024) or ``cpu``.
    """
    ds = DATASETS[dataset]
    tag = f"{algorithm}_{variant}" if variant else algorithm
    stem = f"{tag}_{dataset}_{num_labels}_{seed}"
    paths = offline_paths(dataset, num_labels, seed)
    cpu = schedule == "cpu"
    if cpu:
        sch = CPU_SCHEDULE[dataset]
        epoch, iters = sch["epoch"], sch["num_train_iter"]
        n_eval, n_log = sch["num_eval_iter"], sch["num_log_iter"]
        batch, uratio, eval_batch = sch["batch_size"], sch["uratio"], sch["eval_batch_size"]
        prior_t, interval = sch["prior_T"], sch["prior_update_interval"]
        ema_m = sch["ema_m"]
    elif schedule == "standard":
        epoch, iters, n_eval, n_log = 1024, STANDARD_ITERS, 5120, 256
        batch, uratio, eval_batch = 64, 7, 256
        prior_t, interval = PRIOR_T, 1024
        ema_m = 0.999
    else:
        iters = short_schedule(dataset, num_labels)
        epoch, n_eval, n_log = 112, 1024, 256
        batch, uratio, eval_batch = 64, 7, 256
        prior_t, interval = PRIOR_T, iters // 112   # one refresh per "epoch" of the schedule
        ema_m = 0.999
    as3l = algorithm == "as3l_flexmatch"
    use_index = as3l or variant == "lbidx"
    save_dir = "./saved_models/cpu" if cpu else "./saved_models/classic_cv"  # USB's save_dir

    c = {}
    c["algorithm"] = algorithm
    c["save_dir"] = save_dir
    c["save_name"] = stem
    c["resume"] = True
    c["load_path"] = f"{save_dir}/{stem}/latest_model.pth"
    c["overwrite"] = True
    c["use_tensorboard"] = not cpu
    c["use_wandb"] = False
    c["epoch"] = epoch
    c["num_train_iter"] = iters
    c["num_eval_iter"] = n_eval
    c["num_log_iter"] = n_log
    c["num_labels"] = num_labels
    c["batch_size"] = batch
    c["eval_batch_size"] = eval_batch
    c["hard_label"] = True
    c["T"] = 0.5
    c["thresh_warmup"] = True
    c["p_cutoff"] = 0.95
    if as3l:
        c["prior_file"] = paths["prior_file"]
        c["prior_T"] = prior_t
        c["prior_mode"] = prior_mode(dataset, num_labels)
        c["prior_update_interval"] = interval
        c["prior_update_ks"] = list(PRIOR_KS)
        c["prior_update_features"] = "extract"
    c["ulb_loss_ratio"] = 1.0
    c["uratio"] = uratio
    c["ema_m"] = ema_m
    c["crop_ratio"] = ds["crop_ratio"]
    c["img_size"] = ds["img_size"]
    c["optim"] = "SGD"
    c["lr"] = 0.03
    c["momentum"] = 0.9
    c["weight_decay"] = ds["weight_decay"]
    c["layer_decay"] = 1.0
    c["amp"] = False
    c["clip_grad"] = 0.0
    c["use_cat"] = True
    c["net"] = ds["net"]
    c["net_from_name"] = False
    if as3l:  # SimSiam initialisation is part of AS3L; FlexMatch keeps USB's random init
        c["use_pretrain"] = True
        c["pretrain_path"] = paths["pretrain_path"]
    c["data_dir"] = "./data"
    c["dataset"] = dataset
    if use_index:
        c["lb_index_file"] = paths["lb_index_file"]
    c["train_sampler"] = "RandomSampler"
    c["num_classes"] = ds["num_classes"]
    c["num_workers"] = 0 if cpu else 1
    c["seed"] = seed
    c["world_size"] = 1
    c["rank"] = 0
    c["multiprocessing_distributed"] = not cpu
    c["dist_url"] = f"tcp://127.0.0.1:{ds['port']}"
    c["dist_backend"] = "gloo" if cpu else "nccl"
    c["gpu"] = None   # USB: None = all GPUs (DDP sets one per process); plugin: CPU when no CUDA
    return stem, c


def all_configs() -> list[tuple[str, str, dict]]:
    """Every config as ``(dataset folder, file stem, keys)``."""
    out = []
    for dataset, n in PAPER_SETTINGS:
        for algorithm, variant, schedule in (("as3l_flexmatch", "", "short"),
                                             ("flexmatch", "lbidx", "short"),
                                             ("flexmatch", "", "standard")):
            stem, c = make_config(algorithm=algorithm, dataset=dataset, num_labels=n,
                                  variant=variant, schedule=schedule)
            out.append((dataset, stem, c))
    for dataset, n in CPU_SETTINGS:
        for algorithm, variant in (("as3l_flexmatch", ""), ("flexmatch", "lbidx"),
                                   ("flexmatch", "")):
            stem, c = make_config(algorithm=algorithm, dataset=dataset, num_labels=n,
                                  variant=variant, schedule="cpu")
            out.append((dataset, stem, c))
    return out


# ---------------------------------------------------------------------------------------------
# YAML in USB's spelling
# ---------------------------------------------------------------------------------------------

def _value(v) -> str:
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def to_yaml(keys: dict) -> str:
    return "".join(f"{k}: {_value(v)}\n" for k, v in keys.items())


def expected_files() -> dict[Path, str]:
    return {HERE / dataset / f"{stem}.yaml": to_yaml(keys) for dataset, stem, keys in all_configs()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report files that would change")
    args = p.parse_args(argv)
    stale = []
    for path, text in expected_files().items():
        current = path.read_text() if path.is_file() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    verb = "differ from the generator" if args.check else "written"
    for path in stale:
        print(f"{path.relative_to(HERE)}: {verb}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
