"""lrn: an experiment runner for Local Response Normalization in convolutional networks.

    from lrn_cli import train, ablate
    result = train("configs/synthetic.yaml", overrides=["train.epochs=1"])
    outcome = ablate("experiments/lrn_on_off.yaml", jobs=2)
"""
__version__ = "0.1.0"


def __getattr__(name: str):  # import torch-heavy parts only when asked for
    if name == "train":
        from .engine import train

        return train
    if name == "ablate":
        from importlib import import_module

        return import_module(".sweep", __name__).ablate
    if name in ("load_config", "Config"):
        from . import config

        return getattr(config, name)
    raise AttributeError(name)


__all__ = ["Config", "ablate", "load_config", "train"]
