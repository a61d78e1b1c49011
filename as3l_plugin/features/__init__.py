"""Feature stage (AS3L Sec. 3.2.1): SimSiam pretraining, extraction, Eq. 1 fine-tuning, evaluation.

Public API (imported lazily, so ``import as3l_plugin.features`` does not load torch)::

    pretrain_simsiam(dataset, net, *, out, epochs, ...)  -> Path of out/backbone.pth
    extract_features(checkpoint, dataset, *, split)      -> float32 (n, F)
    finetune_features(f_self, *, k, runs, epochs, seed)  -> float32 (n, F)
    linear_eval(Xtr, ytr, Xte, yte, *, num_classes)      -> LinearEvalResult
    choose_features(candidates, budget, seed=0, *, judge=None) -> (name, scores)
    pixel_features(images, dim=50)                       -> float32 (n, dim)
    hog_features(images)                                 -> float32 (n, d), the judge

and the classes behind them: SimSiamPretrainer, FeatureFinetuner, SimSiam and its heads.
"""

from importlib import import_module

_EXPORTS = {
    "pretrain_simsiam": "pretrain", "SimSiamPretrainer": "pretrain",
    "extract_features": "extract",
    "finetune_features": "finetune", "FeatureFinetuner": "finetune",
    "choose_features": "choose", "pixel_features": "choose", "hog_features": "choose",
    "linear_eval": "evaluate", "LinearEvalResult": "evaluate",
    "SimSiam": "simsiam", "ProjectionHead": "simsiam", "PredictionHead": "simsiam",
    "NegativeCosineLoss": "simsiam",
    "load_backbone": "backbone", "build_backbone": "backbone",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
