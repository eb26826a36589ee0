"""The config schema: the single source of truth for keys, types, defaults and allowed ranges.

A config is a YAML file validated into `Config`. `--set KEY=VALUE` overrides any key (dotted
keys, values parsed as YAML). Every mistake becomes a `UserError` that names the key, the value
and what is allowed; an unknown key also gets the closest valid key as a suggestion.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .errors import UserError
from .lrn.conventions import CONVENTIONS, REGIONS, LRNParams, with_defaults


class _Strict(BaseModel):
    # strict: no silent coercion ("5" is not an int, true is not 1); extra keys are errors
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


# ----------------------------------------------------------------------------- norm

class NormConfig(_Strict):
    """What every `norm` slot of a model becomes. LRN parameters left out take the defaults of
    the chosen convention (`lrn_cli.lrn.conventions.DEFAULTS`); for type lrn they are checked
    once, here, into `lrn` (an `LRNParams`), which the model builder hands to the layer."""

    type: Literal["lrn", "none", "batchnorm", "groupnorm"] = "lrn"
    size: int | None = Field(None, description="LRN window: channels (across) or n x n pixels (within)")
    alpha: float | None = Field(None, description="LRN scale, in the convention's own meaning")
    beta: float | None = Field(None, description="LRN exponent")
    k: float | None = Field(None, description="LRN additive constant")
    region: Literal[REGIONS] | None = "across"  # type: ignore[valid-type]
    convention: Literal[CONVENTIONS] | None = "torch"  # type: ignore[valid-type]
    groups: int | None = Field(8, ge=1, description="groupnorm: number of groups")
    impl: Literal["fused", "reference"] | None = Field("fused", description="LRN implementation")
    _lrn: LRNParams | None = None

    @property
    def lrn(self) -> LRNParams | None:
        """The checked LRN parameters (None unless type is lrn)."""
        return self._lrn

    @model_validator(mode="after")
    def _fill_and_check(self, info: ValidationInfo) -> "NormConfig":
        for name, value in with_defaults(self.convention, size=self.size, alpha=self.alpha,
                                         beta=self.beta, k=self.k).items():
            setattr(self, name, value)
        if self.type == "lrn":
            try:
                self._lrn = LRNParams(self.size, self.alpha, self.beta, self.k, self.region, self.convention)
            except ValueError as e:  # the message starts with the parameter's name
                raise UserError(f"{(info.context or {}).get('prefix', 'model.norm.')}{e}") from None
        else:  # keys that do nothing for this type are null, so equal networks have equal configs
            for name in ("size", "alpha", "beta", "k", "region", "convention", "impl"):
                setattr(self, name, None)
        if self.type != "groupnorm":
            self.groups = None
        return self


# ----------------------------------------------------------------------------- layers

class ConvSpec(_Strict):
    out: int = Field(ge=1)
    kernel: int = Field(3, ge=1)
    stride: int = Field(1, ge=1)
    padding: int | None = Field(None, ge=0, description="default: kernel // 2")
    groups: int = Field(1, ge=1)
    bias: bool = True


class LocalSpec(_Strict):
    """A locally connected layer (unshared weights: each output position its own filter, as
    cuda-convnet's `type=local`), with a bias per output position and channel."""

    out: int = Field(ge=1)
    kernel: int = Field(3, ge=1)
    stride: int = Field(1, ge=1)
    padding: int | None = Field(None, ge=0, description="default: kernel // 2")
    bias: bool = True


class PoolSpec(_Strict):
    kind: Literal["max", "avg"] = "max"
    kernel: int = Field(2, ge=1)
    stride: int | None = Field(None, ge=1, description="default: kernel")
    padding: int = Field(0, ge=0)
    ceil: bool = Field(False, description="ceil mode, as Caffe sizes its pooling outputs")


class AdaptivePoolSpec(_Strict):
    kind: Literal["max", "avg"] = "avg"
    size: int = Field(1, ge=1)


class FcSpec(_Strict):
    out: int | None = Field(None, ge=1, description="default: model.num_classes")
    bias: bool = True


class DropoutSpec(_Strict):
    p: float = Field(0.5, ge=0, lt=1)


class EmptySpec(_Strict):
    pass


class NormSlotSpec(_Strict):
    """A `norm` slot; any key given here overrides `model.norm` for this slot only."""

    type: Literal["lrn", "none", "batchnorm", "groupnorm"] | None = None
    size: int | None = None
    alpha: float | None = None
    beta: float | None = None
    k: float | None = None
    region: Literal[REGIONS] | None = None  # type: ignore[valid-type]
    convention: Literal[CONVENTIONS] | None = None  # type: ignore[valid-type]
    groups: int | None = None
    impl: Literal["fused", "reference"] | None = None


def slot_norm(norm: NormConfig, slot: NormSlotSpec, prefix: str) -> NormConfig:
    """The norm settings of one `norm` slot: `model.norm` with the slot's own keys on top, or
    `model.norm` itself where the slot has none."""
    own = slot.model_dump(exclude_none=True)
    if not own:
        return norm
    return _merged_norm(tuple(sorted({**norm.model_dump(), **own}.items())), prefix).model_copy()


@functools.lru_cache(maxsize=256)
def _merged_norm(merged: tuple[tuple[str, Any], ...], prefix: str) -> NormConfig:
    """A slot's NormConfig, validated once however often it is asked for (the schema checks the
    slots of a layer list, and the model builder asks again)."""
    try:
        return NormConfig.model_validate(dict(merged), context={"prefix": prefix})
    except ValidationError as e:
        raise UserError(_format_errors(e, prefix=prefix)) from None


LAYER_SPECS: dict[str, type[_Strict]] = {
    "conv": ConvSpec, "local": LocalSpec, "pool": PoolSpec, "adaptive_pool": AdaptivePoolSpec, "fc": FcSpec,
    "dropout": DropoutSpec, "norm": NormSlotSpec, "relu": EmptySpec, "flatten": EmptySpec,
}
# the argument a scalar shorthand sets: `- fc: 10`, `- dropout: 0.5`, `- conv: 32`
_SHORTHAND = {"conv": "out", "local": "out", "fc": "out", "dropout": "p", "pool": "kernel", "adaptive_pool": "size",
              "norm": "type"}


def parse_layer(item: Any, where: str) -> tuple[str, _Strict]:
    """One entry of `model.layers` (`relu`, `{conv: {out: 32}}`, `{fc: 10}`) -> (kind, spec)."""
    if isinstance(item, str):
        kind, args = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        kind, args = next(iter(item.items()))
        if args is None:
            args = {}
        elif not isinstance(args, dict):
            if kind not in _SHORTHAND:
                raise UserError(f"{where}: '{kind}' takes no value (got {args!r}); write it as '- {kind}'")
            args = {_SHORTHAND[kind]: args}
    else:
        raise UserError(f"{where}: a layer is a name ('relu') or a one-key mapping "
                        f"('conv: {{out: 32, kernel: 5}}'), got {item!r}")
    if kind not in LAYER_SPECS:
        raise UserError(f"{where}: unknown layer '{kind}'{suggest(kind, LAYER_SPECS)}; "
                        f"layers are {', '.join(LAYER_SPECS)}")
    try:
        return kind, LAYER_SPECS[kind].model_validate(args)
    except ValidationError as e:
        raise UserError(_format_errors(e, prefix=f"{where}.{kind}.")) from None


# ----------------------------------------------------------------------------- sections

class AugmentConfig(_Strict):
    crop: int = Field(4, ge=0, description="random-crop shift in pixels: the crop moves up to this far each way "
                                           "from the centre, zero padding where it leaves the image (0: no "
                                           "crop); imagefolder: any value > 0 turns on the random-resized crop")
    flip: bool = Field(True, description="random horizontal flip")
    scale: list[float] = Field([0.35, 1.0], description="imagefolder: range of the area fraction that "
                                                         "a random-resized crop keeps")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: list[float]) -> list[float]:
        if len(v) != 2 or not 0 < v[0] <= v[1] <= 1:
            raise ValueError("must be [low, high] with 0 < low <= high <= 1, e.g. [0.35, 1.0]")
        return v

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, v: Any) -> Any:  # `augment: false` switches it all off
        if v is True:
            return {}
        if v is False:
            return {"crop": 0, "flip": False}
        return v


IMAGEFOLDER_SIZE = 112  # data.image_size of an image folder when not given
IMAGEFOLDER_SIZES = (32, 512)
CIFAR_SIZE = 32  # CIFAR-10's images; data.image_size below it is a crop of them


class DataConfig(_Strict):
    dataset: Literal["cifar10", "synthetic", "imagefolder"] = "cifar10"
    root: str = Field("data", description="cifar10: folder holding cifar-10-batches-py (or that folder); "
                                          "imagefolder: the folder holding train/ (and val/)")
    download: bool = False
    image_size: int | None = Field(None, ge=8, le=1024, description="default: the dataset's own "
                                   f"(imagefolder: {IMAGEFOLDER_SIZE}); cifar10: a crop of the 32 px images "
                                   "(random for training, the centre for testing), 8 to 32")
    classes: int | list[str] | dict[str, int] | None = Field(
        None, description="first N classes, a list of names, or {random: N, seed: S}")
    per_class: int | None = Field(None, ge=1, description="cap on training images per class")
    test_per_class: int | None = Field(None, ge=1, description="cap on test images per class")
    val_split: float = Field(0.0, ge=0, lt=1, description="fraction of train held out for validation "
                                                          "(an image folder without val/: for testing)")
    cache: str | None = Field(None, description="imagefolder: folder of the decoded-image cache "
                                                "(default <root>/.lrn-cache, or ~/.cache/lrn/folders)")
    augment: AugmentConfig = AugmentConfig()
    normalize: Literal["unit", "caffe", "none"] = Field(
        "unit", description="input scale: unit (per-channel mean 0, std 1), caffe (0-255 pixel values minus "
                            "the per-channel mean, as Caffe's examples feed them), none (pixels in [0, 1])")

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, v: Any) -> Any:
        forms = "give a number N (the first N classes), a list of names, or {random: N, seed: S}"
        if isinstance(v, dict):
            n, seed = v.get("random"), v.get("seed", 0)
            if set(v) - {"random", "seed"} or type(n) is not int or type(seed) is not int or seed < 0:
                raise ValueError(f"a random choice is written {{random: N, seed: S}} (N >= 2, S >= 0); {forms}")
            v = {"random": n, "seed": seed}
        elif not (v is None or type(v) is int or (isinstance(v, list) and all(isinstance(c, str) for c in v))):
            raise ValueError(forms)
        count = v["random"] if isinstance(v, dict) else v
        if type(count) is int and count < 2:
            raise ValueError("must be at least 2")
        if isinstance(v, list) and len(set(v)) < 2:
            raise ValueError("must name at least 2 different classes")
        return v

    @model_validator(mode="after")
    def _imagefolder(self) -> "DataConfig":
        if self.dataset == "cifar10" and self.image_size is not None and self.image_size > CIFAR_SIZE:
            raise UserError(f"data.image_size: CIFAR-10 images are {CIFAR_SIZE} px (got {self.image_size}); "
                            f"leave it unset for the whole image, or set a crop of 8 to {CIFAR_SIZE} px (e.g. 24)")
        if self.dataset != "imagefolder":
            return self
        if self.download:
            raise UserError("data.download: only CIFAR-10 can be downloaded; for imagefolder set it to "
                            "false and point data.root at a folder holding train/<class>/ images")
        if self.image_size is None:
            self.image_size = IMAGEFOLDER_SIZE
        low, high = IMAGEFOLDER_SIZES
        if not low <= self.image_size <= high:
            raise UserError(f"data.image_size: imagefolder crops are {low} to {high} px (got {self.image_size}); "
                            f"e.g. {IMAGEFOLDER_SIZE} or 224")
        return self


DEFAULT_PRESET = "cifar10_full"


class ModelConfig(_Strict):
    preset: str | None = Field(None, description="a named network (see `lrn_cli.models.PRESETS`); "
                                                 f"default {DEFAULT_PRESET} when model.layers is not given")
    layers: list[Union[str, dict[str, Any]]] | None = Field(None, description="a layer list")
    num_classes: int | None = Field(None, ge=2, description="default: from the dataset")
    width: float = Field(1.0, gt=0, le=16, description="multiplies the channels of every conv and local "
                                                        "layer and the outputs of every fc but the last")
    init: Literal["torch", "kaiming", "caffe"] = Field(
        "torch", description="torch: PyTorch's default init; kaiming: He-normal conv, local and fc weights, "
                             "zero biases; caffe: the fillers of the preset's Caffe prototxt or cuda-convnet "
                             "layer file (lrn_cli.presets.CAFFE)")
    caffe_multipliers: bool = Field(False, description="the lr_mult and decay_mult of each layer of the "
                                                       "preset's Caffe prototxt (or cuda-convnet's epsB/epsW and "
                                                       "wc), as optimizer parameter groups")
    norm: NormConfig = NormConfig()

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        from .presets import CAFFE, PRESETS

        if self.preset is not None and self.layers is not None:
            raise UserError("model: give model.preset (one of "
                            f"{', '.join(PRESETS)}) or model.layers (a layer list), not both; "
                            "set the other to null")
        if self.preset is None and self.layers is None:
            self.preset = DEFAULT_PRESET
        if self.preset is not None and self.preset not in PRESETS:
            raise UserError(f"model.preset: unknown preset '{self.preset}'{suggest(self.preset, PRESETS)}; "
                            f"presets are {', '.join(PRESETS)}")
        for key, used, other in (("init: caffe", self.init == "caffe", "model.init torch or kaiming"),
                                 ("caffe_multipliers", self.caffe_multipliers, "model.caffe_multipliers false")):
            if used and self.preset not in CAFFE:
                net = f"the preset {self.preset}" if self.preset else "a layer list"
                raise UserError(f"model.{key}: only the presets {', '.join(CAFFE)} carry per-layer fillers and "
                                f"multipliers (Caffe's prototxts, cuda-convnet's layer files), {net} has none; "
                                f"use one of them, or {other}")
        for i, item in enumerate(self.layers or []):
            kind, spec = parse_layer(item, f"model.layers[{i}]")
            if kind == "norm":
                slot_norm(self.norm, spec, f"model.layers[{i}].norm.")
        return self


ONECYCLE_WARMUP = 0.25


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (AdamW: beta1)")
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["constant", "multistep", "cosine", "onecycle"] = "cosine"
    milestones: list[float] = Field([0.5, 0.75], description="multistep: fractions of training")
    gamma: float = Field(0.1, gt=0, le=1, description="multistep: factor at each milestone")
    warmup: float | None = Field(None, ge=0, lt=1, description="fraction of training spent warming up "
                                 f"(default: {ONECYCLE_WARMUP} for onecycle, its rising part; 0 otherwise)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    threads: int = Field(0, ge=0, description="torch threads per process (0: torch's default; with "
                                                "nproc > 1: the cores shared out)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    nproc: int = Field(1, ge=1, description="processes that train the run together (DistributedDataParallel; "
                                            "batch_size is the global batch, split evenly)")

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, v: list[float]) -> list[float]:
        if any(not 0 < m < 1 for m in v) or v != sorted(v):
            raise ValueError("must be increasing fractions of training, each in (0, 1)")
        return v

    @model_validator(mode="after")
    def _warmup(self) -> "TrainConfig":
        if self.warmup is None:
            self.warmup = ONECYCLE_WARMUP if self.schedule == "onecycle" else 0.0
        return self


class EvalConfig(_Strict):
    """How a trained network is evaluated: never part of the run's identity (`Config.identity`).
    The corrupted evaluations (`lrn_cli.robust`) run on the test split after training, and with
    `lrn eval`."""

    batch_size: int = Field(500, ge=1)
    corruptions: Union[str, list[str]] = Field(
        "none", description="corrupted test sets to evaluate after training: none, all, a family (noise, blur, "
                            "weather, digital, extra, lighting, benchmark = the 15) or a list of names and families")
    severities: list[int] = Field([1, 2, 3, 4, 5], description="corruption severities, each 1-5")
    corruption_seed: int = Field(0, ge=0, description="seed of the corruptions' random draws")
    corruption_table: Literal["auto", "cifar10", "tinyimagenet", "imagenet"] = Field(
        "auto", description="the reference's severity parameters: those of CIFAR-10-C (32 px), Tiny-ImageNet-C "
                            "(64 px) or ImageNet-C (224 px); auto: by the network's input size (below 48 px "
                            "CIFAR's, below 96 px Tiny-ImageNet's, else ImageNet's)")
    corruption_per_class: int | None = Field(None, ge=1, description="test images per class for the corrupted "
                                             "evaluations (stratified, fixed; default: all)")
    corruptions_root: str | None = Field(None, description="released CIFAR-10-C .npy files or an ImageNet-C / "
                                         "Tiny-ImageNet-C tree to read in place of corrupting on the fly")

    @field_validator("corruptions")
    @classmethod
    def _corruptions(cls, v: str | list[str]) -> str | list[str]:
        if v != "none":
            from .data.corruptions import resolve  # torch: only where corruptions are asked for

            resolve(v)  # a ValueError naming the entry, with the closest name
        return v

    @field_validator("severities", mode="before")
    @classmethod
    def _severities(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v]
        if isinstance(v, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in v):
            if not v or any(not 1 <= s <= 5 for s in v):
                raise ValueError("each severity must be 1, 2, 3, 4 or 5, e.g. [1, 2, 3, 4, 5] or [3]")
            return sorted(set(v))
        return v

    @property
    def corruption_names(self) -> list[str]:
        """eval.corruptions as corruption names, in the benchmark's order."""
        if self.corruptions == "none":
            return []
        from .data.corruptions import resolve

        return resolve(self.corruptions)


class Config(_Strict):
    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _released_crops(self) -> "Config":
        d = self.data
        if self.eval.corruptions_root and d.dataset == "cifar10" and (d.image_size or CIFAR_SIZE) < CIFAR_SIZE:
            raise UserError(f"eval.corruptions_root: released CIFAR-10-C images are {CIFAR_SIZE} px, but this "
                            f"network sees {d.image_size} px crops (data.image_size); leave eval.corruptions_root "
                            "null to corrupt the test crops on the fly")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)

    def identity(self, seed: bool = True) -> dict[str, Any]:
        """What the trained network depends on, as a mapping: the resolved config without how the
        run is executed (`RUN_ONLY`), without `eval.*` (evaluating a network differently does not
        make it another network), without keys added to the schema since runs were first named
        (`ADDED_KEYS`) while they are at their default, and without the seed if seed=False."""
        d = self.to_dict()
        d.pop("eval")
        for dotted in RUN_ONLY:
            _pop(d, dotted)
        for dotted, default in ADDED_KEYS.items():
            if _get(d, dotted) == default:
                _pop(d, dotted)
        if not seed:
            d.pop("seed")
        return d

    def hash(self, n: int = 10, seed: bool = True) -> str:
        """Short hash of `identity()`: the run's identity. Equal networks share it, seed included
        (unless seed=False: the hash that a group of seeds shares)."""
        return _digest(self.identity(seed), n)

    def legacy_hash(self, n: int = 10, seed: bool = True) -> str | None:
        """The hash that named this config's run directory before `identity()` existed (the whole
        resolved config, eval.batch_size included, but for RUN_ONLY): how sweeps made then find
        their runs. None where that code could not have made this config."""
        d = self.to_dict()
        d["eval"] = {"batch_size": d["eval"]["batch_size"]}
        if d["train"]["schedule"] == "onecycle":  # that code read warmup 0 as 0.25 and had no 0
            if d["train"]["warmup"] == 0:
                return None
            if d["train"]["warmup"] == ONECYCLE_WARMUP:
                d["train"]["warmup"] = 0.0
        for dotted in RUN_ONLY:
            _pop(d, dotted)
        for dotted, default in ADDED_KEYS.items():
            if _get(d, dotted) != default:
                return None
            _pop(d, dotted)
        if not seed:
            d.pop("seed")
        return _digest(d, n)


# how to run, not what: train.nproc splits the same global batch, so the gradients are the same sums
RUN_ONLY = ("train.threads", "train.device", "train.nproc", "data.cache")
# keys added after run directories were first named by hash, with their defaults; a key at its
# default is left out of the identity, so that adding a key renames no run made before it
ADDED_KEYS: dict[str, Any] = {"data.normalize": "unit", "model.caffe_multipliers": False}


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _pop(d: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        d = d[part]
    d.pop(last, None)


def _digest(d: dict[str, Any], n: int) -> str:
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


# ----------------------------------------------------------------------------- YAML

class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (YAML 1.2), not the string PyYAML makes of it."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise UserError(f"{where}: not valid YAML ({' '.join(str(e).split())})") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; check the path") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it ({e.__class__.__name__})") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raise UserError(f"{path}: the file is empty; a config is a YAML mapping of keys (name, data, "
                        "model, train ...), e.g. copy configs/synthetic.yaml")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config is a YAML mapping of keys (name, data, model, train ...)")
    return raw


def apply_set(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `KEY=VALUE` override in place; KEY is dotted, VALUE is parsed as YAML."""
    key, sep, value = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {assignment!r}: write it as KEY=VALUE, e.g. --set train.epochs=5")
    set_key(raw, key, parse_yaml(value, f"--set {key}"))


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    node: Any = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: '{'.'.join(parts[:i])}' is not a mapping")
        if not isinstance(node.get(part), (dict, list)):
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise UserError(f"--set {key}: '{'.'.join(parts[:-1])}' is not a mapping")


def load_config(source: str | Path | dict[str, Any] | Config | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A config file (or mapping, or Config) plus `--set` overrides -> validated Config."""
    if isinstance(source, Config):
        raw = source.to_dict()
    elif isinstance(source, dict):
        raw = json.loads(json.dumps(source))  # a private deep copy
    elif source is None:
        raw = {}
    else:
        raw = read_yaml(source)
    for assignment in overrides:
        apply_set(raw, assignment)
    return validate(raw, where=str(source) if isinstance(source, (str, Path)) else None)


# summary.json's `config_version`: 2 since the config's identity left out eval.* and onecycle's
# warmup 0 came to mean no warmup. A run directory without it was written by the code before.
CONFIG_VERSION = 2


def load_run_config(run_dir: str | Path, summary: dict[str, Any] | None = None) -> Config:
    """The config stored in a run directory, read as the code that wrote it meant it: in a run
    from before CONFIG_VERSION 2, `train.warmup: 0` under onecycle trained with 0.25."""
    path = Path(run_dir) / "config.yaml"
    raw = read_yaml(path)
    if summary is not None and "config_version" not in summary:
        train = raw.get("train")
        if isinstance(train, dict) and train.get("schedule") == "onecycle" and train.get("warmup") == 0:
            train["warmup"] = ONECYCLE_WARMUP
    return validate(raw, where=str(path))


def validate(raw: dict[str, Any], where: str | None = None) -> Config:
    """Validate a raw mapping; errors name the file (`where`) when there is one, and the key."""
    prefix = f"{where}: " if where else ""
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise UserError(prefix + _format_errors(e)) from None
    except UserError as e:  # raised by a validator, already naming the key
        raise UserError(prefix + str(e)) from None


# ----------------------------------------------------------------------------- messages

def suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the mapping at `loc` inside `model` (for suggestions)."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        sub = getattr(field, "annotation", None) if field else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return []
        model = sub
    return list(model.model_fields)


def _format_errors(err: ValidationError, prefix: str = "") -> str:
    model = err.title and {m.__name__: m for m in (Config, *LAYER_SPECS.values())}.get(err.title)
    lines = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith(("function-", "str", "dict["))))
        key = prefix + ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            valid = _fields_at(model, loc[:-1]) if model else []
            lines.append(f"unknown key '{key}'{suggest(str(loc[-1]), valid)}"
                         + (f"; valid keys here: {', '.join(valid)}" if valid else ""))
        else:
            msg = e["msg"].replace("Value error, ", "")
            got = "" if e["type"] == "missing" else f" (got {e['input']!r})"
            lines.append(f"{key}: {msg[0].lower() + msg[1:]}{got}")
    return "; ".join(dict.fromkeys(lines))
