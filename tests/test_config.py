"""The config schema: defaults, overrides, and every kind of mistake a user can make."""
import re

import pytest

from lrn_cli.config import Config, apply_set, load_config, parse_yaml
from lrn_cli.errors import UserError

from conftest import REPO


def error_of(raw=None, overrides=()) -> str:
    with pytest.raises(UserError) as e:
        load_config(raw if raw is not None else {}, overrides)
    return str(e.value)


def test_shipped_configs_resolve_and_round_trip():
    for path in (REPO / "configs").glob("*.yaml"):
        cfg = load_config(path)
        again = load_config(parse_yaml(cfg.to_yaml(), "resolved"))
        assert again == cfg and again.hash() == cfg.hash()


def test_cifar10_full_is_caffes_network_and_lrn():
    cfg = load_config(REPO / "configs" / "cifar10_full.yaml")
    assert cfg.model.preset == "cifar10_full"
    n = cfg.model.norm
    assert (n.type, n.region, n.convention, n.size, n.alpha, n.beta) == ("lrn", "within", "caffe", 3, 5e-5, 0.75)
    assert cfg.data.download is True
    assert load_config(REPO / "configs" / "cifar10_full.yaml", ["model.norm.type=none"]).model.norm.type == "none"


def test_set_parses_yaml_values_and_dotted_keys():
    cfg = load_config({}, ["model.norm.alpha=1e-3", "train.epochs=5", "data.classes=[cat, dog]",
                           "train.nesterov=false", "data.augment=false"])
    assert cfg.model.norm.alpha == 1e-3 and isinstance(cfg.model.norm.alpha, float)
    assert cfg.train.epochs == 5 and cfg.data.classes == ["cat", "dog"] and cfg.train.nesterov is False
    assert (cfg.data.augment.crop, cfg.data.augment.flip) == (0, False)


def test_set_reaches_into_layer_lists():
    raw = {"model": {"layers": [{"conv": {"out": 8}}, "relu", "flatten", "fc"]}}
    cfg = load_config(raw, ["model.layers.0.conv.out=16"])
    assert cfg.model.layers[0] == {"conv": {"out": 16}}


def test_lrn_defaults_follow_the_convention():
    alex = load_config({}, ["model.norm.convention=alexnet"]).model.norm
    assert (alex.size, alex.alpha, alex.beta, alex.k) == (5, 1e-4, 0.75, 2.0)
    torch_ = load_config({}).model.norm
    assert (torch_.size, torch_.alpha, torch_.beta, torch_.k) == (5, 1e-4, 0.75, 1.0)


def test_hash_depends_on_every_value_including_seed():
    a, b = load_config({}), load_config({}, ["seed=1"])
    assert a.hash() == load_config({}).hash() and a.hash() != b.hash() and len(a.hash()) == 10
    assert a.hash(seed=False) == b.hash(seed=False)
    # how a run is executed is not what it computes
    how = ["train.threads=1", "train.device=cpu", "train.nproc=4", "data.cache=/tmp/c"]
    assert load_config({}, how).hash() == a.hash()


@pytest.mark.parametrize("raw, needles", [
    ({"modle": {}}, ["unknown key 'modle'", "did you mean 'model'"]),
    ({"model": {"norm": {"alpah": 1.0}}}, ["unknown key 'model.norm.alpah'", "did you mean 'alpha'"]),
    ({"train": {"epochs": "ten"}}, ["train.epochs", "valid integer", "'ten'"]),
    ({"train": {"epochs": 0}}, ["train.epochs", "greater than or equal to 1", "(got 0)"]),
    ({"train": {"lr": -0.1}}, ["train.lr", "greater than 0", "-0.1"]),
    ({"train": {"optimizer": "adam"}}, ["train.optimizer", "'sgd' or 'adamw'", "'adam'"]),
    ({"train": {"milestones": [0.5, 2]}}, ["train.milestones", "fractions"]),
    ({"data": {"val_split": 1.5}}, ["data.val_split", "less than 1"]),
    ({"data": {"classes": 1}}, ["data.classes", "at least 2"]),
    ({"data": {"dataset": "mnist"}}, ["data.dataset", "'cifar10', 'synthetic' or 'imagefolder'"]),
    ({"model": {"norm": {"type": "lrnn"}}}, ["model.norm.type", "'lrn', 'none', 'batchnorm' or 'groupnorm'"]),
    ({"model": {"norm": {"size": 0}}}, ["model.norm.size", "integer >= 1", "0"]),
    ({"model": {"norm": {"size": 2.5}}}, ["model.norm.size", "integer"]),
    ({"model": {"norm": {"alpha": -1.0}}}, ["model.norm.alpha", ">= 0"]),
    ({"model": {"norm": {"beta": -0.5}}}, ["model.norm.beta", ">= 0"]),
    ({"model": {"norm": {"k": 0.0}}}, ["model.norm.k", "> 0"]),
    ({"model": {"norm": {"region": "within"}}}, ["model.norm.region", "'torch' has no within-channel"]),
    ({"model": {"norm": {"convention": "caffe", "size": 4}}}, ["model.norm.size", "odd", "caffe"]),
    ({"model": {"norm": {"convention": "keras"}}}, ["model.norm.convention", "'torch'", "'keras'"]),
    ({"model": {"preset": "cifar_full"}}, ["model.preset", "did you mean 'cifar10_full'"]),
    ({"model": {"preset": "cifar10_full", "layers": ["relu"]}}, ["not both", "model.layers"]),
    ({"model": {"preset": None, "layers": ["relu", "maxpool"]}}, ["model.layers[1]", "unknown layer 'maxpool'"]),
    ({"model": {"preset": None, "layers": [{"conv": {"out": 8, "kernal": 3}}]}},
     ["model.layers[0].conv.kernal", "did you mean 'kernel'"]),
    ({"model": {"preset": None, "layers": [{"conv": {"out": 0}}]}}, ["model.layers[0].conv.out", "greater than"]),
    ({"model": {"preset": None, "layers": [{"relu": 3}]}}, ["model.layers[0]", "takes no value"]),
    ({"model": {"preset": None, "layers": [{"norm": {"size": -1}}]}}, ["model.layers[0].norm.size", ">= 1"]),
    ({"name": "my run"}, ["name", "pattern"]),
])
def test_each_mistake_names_the_key_and_what_is_allowed(raw, needles):
    message = error_of(raw)
    for needle in needles:
        assert needle in message, (needle, message)
    assert "\n" not in message


def test_bad_set_syntax():
    assert "KEY=VALUE" in error_of({}, ["train.epochs"])
    assert "KEY=VALUE" in error_of({}, ["=3"])
    assert "train.lr" in error_of({}, ["train.lr=[1, 2"])  # YAML syntax error names the key


def test_set_cannot_descend_into_a_scalar():
    with pytest.raises(UserError, match="not a mapping"):
        apply_set({"train": {"epochs": 3}, "model": ["x"]}, "model.a.b=1")


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 3\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="YAML mapping"):
        load_config(lst)


def readme_defaults() -> dict[str, str]:
    """The README's config-key table: key -> its default as written there, where the default is
    written as values (`10` / `128`), not as words (dataset's, all)."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Config keys"):text.index("A layer list")]
    found = {}
    for keys, default in re.findall(r"^\| (`[^|]*`) \| ([^|]*) \|", table, re.M):
        names, values = re.findall(r"`([^`]+)`", keys), re.findall(r"`([^`]+)`", default)
        if re.fullmatch(r"(\s*`[^`]+`\s*[,/]?)+", default.strip()) and len(names) == len(values):
            found.update(zip(names, values))
    return found


def leaf_keys(d: dict, prefix: str = "") -> list[str]:
    return [k for key, v in d.items()
            for k in (leaf_keys(v, f"{prefix}{key}.") if isinstance(v, dict) else [f"{prefix}{key}"])]


def test_readme_documents_the_schemas_keys_and_defaults():
    """The README's table is written by hand: every key of the schema is in it, and every default
    it states is the schema's."""
    defaults = Config().to_dict()
    documented = readme_defaults()
    assert len(documented) >= 20
    for key, written in documented.items():
        *parents, last = key.split(".")
        model = Config
        for part in parents:
            model = model.model_fields[part].annotation
        value = model.model_fields[last].default  # the field's own default, as the schema states it
        value = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
        if value is None:  # resolved by a validator (model.preset without model.layers)
            value = defaults
            for part in key.split("."):
                value = value[part]
        assert parse_yaml(written, key) == value, (key, written, value)
    table = (REPO / "README.md").read_text().split("## Config keys")[1].split("A layer list")[0]
    braces = {f"{head}.{k}" for head, ks in re.findall(r"`([a-z_.]+)\.\{([a-z_,]+)\}`", table) for k in ks.split(",")}
    named = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", table)) | braces | {"name", "seed"}
    missing = [k for k in leaf_keys(defaults) if k not in named and not k.startswith("data.augment.")]
    assert not missing, f"keys of the schema that the README's table does not name: {missing}"
