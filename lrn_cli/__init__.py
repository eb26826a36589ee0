"""lrn: an experiment runner for Local Response Normalization in convolutional networks.

    from lrn_cli import train, load_config
    result = train("configs/synthetic.yaml", overrides=["train.epochs=1"])
"""
__version__ = "0.1.0"


def __getattr__(name: str):  # import torch-heavy parts only when asked for
    if name == "train":
        from .engine import train

        return train
    if name in ("load_config", "Config"):
        from . import config

        return getattr(config, name)
    raise AttributeError(name)


__all__ = ["Config", "load_config", "train"]
