"""Corrupted evaluations of trained runs: at the end of `lrn train`, and `lrn eval` on a run or a
sweep (resumable), with their files, summary headline, TensorBoard events and errors."""
import json
from pathlib import Path

import pytest
import torch

from click.testing import CliRunner

from lrn_cli import robust, runs
from lrn_cli.cli import main
from lrn_cli.config import load_config
from lrn_cli.engine import train
from lrn_cli.errors import UserError
from lrn_cli.layout import ROBUSTNESS_EVENTS
from lrn_cli.sweep import ablate

from conftest import REPO

SYNTH = str(REPO / "configs" / "synthetic.yaml")
FAST = ["train.epochs=1", "train.threads=1"]
EVAL = ["eval.corruptions=[gaussian_noise, brightness, underexposure]", "eval.severities=[1, 4]",
        "eval.corruption_per_class=4"]


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-epoch synthetic run, trained with corrupted evaluations at its end."""
    out = tmp_path_factory.mktemp("robust_runs")
    return train(SYNTH, FAST + EVAL, out=out, name="r", quiet=True).run_dir


def test_training_ends_with_the_corrupted_evaluations_in_robustness_json_and_summary(trained_run):
    result = json.loads((trained_run / robust.ROBUSTNESS).read_text())
    s = result["settings"]
    assert s["corruptions"] == ["gaussian_noise", "brightness", "underexposure"]  # the benchmark's order
    assert s["severities"] == [1, 4] and s["per_class"] == 4 and s["images"] == 16 and s["table"] == "cifar10"
    assert set(result["corruptions"]) == set(s["corruptions"])
    for name, c in result["corruptions"].items():
        assert c["source"] == "on_the_fly" and set(c["by_severity"]) == {"1", "4"}
        for m in c["by_severity"].values():
            assert 0 <= m["acc"] <= m["top5"] <= 1 and m["loss"] > 0
        assert c["acc"] == pytest.approx(sum(m["acc"] for m in c["by_severity"].values()) / 2)
    fam = result["families"]
    assert set(fam) == {"noise", "weather", "lighting"}
    clean = result["clean"]["acc"]
    assert fam["noise"]["drop"] == pytest.approx(clean - fam["noise"]["acc"])
    h = result["headline"]
    accs = [m["acc"] for c in result["corruptions"].values() for m in c["by_severity"].values()]
    assert h["corrupted_acc"] == pytest.approx(sum(accs) / len(accs))
    assert h["drop"] == pytest.approx(clean - h["corrupted_acc"])
    assert h["benchmark_acc"] == pytest.approx(sum(accs[:4]) / 4)  # gaussian_noise, brightness
    assert h["lighting_drop"] == pytest.approx(clean - fam["lighting"]["acc"])
    assert "glass_blur" in result["missing_benchmark"] and "brightness" not in result["missing_benchmark"]
    summary = json.loads((trained_run / runs.SUMMARY).read_text())
    assert summary["status"] == "completed"
    assert summary["robustness"]["corrupted_acc"] == h["corrupted_acc"]
    assert (trained_run / ROBUSTNESS_EVENTS).is_file()


def test_the_clean_figure_is_measured_on_the_selected_images(trained_run):
    """With corruption_per_class, clean accuracy is on the same 16 images (not the 64 of the split)."""
    result = json.loads((trained_run / robust.ROBUSTNESS).read_text())
    correct = result["clean"]["acc"] * 16
    assert abs(correct - round(correct)) < 1e-9


def test_eval_settings_do_not_change_the_run_identity():
    assert load_config(SYNTH, FAST).hash() == load_config(SYNTH, FAST + EVAL).hash()


def test_tensorboard_reads_the_scalars_by_severity(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained_run / ROBUSTNESS_EVENTS))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"robust/clean_acc", "robust/corrupted_acc", "robust/drop", "robust/noise_drop",
            "corruption/gaussian_noise"} <= set(tags)
    steps = [e.step for e in acc.Scalars("corruption/brightness")]
    assert steps == [0, 1, 4]  # clean, then each severity


def copy_of(run: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(run, tmp_path / "copy")
    return tmp_path / "copy"


def test_lrn_eval_on_a_run_redoes_only_other_settings(trained_run, tmp_path):
    trained_run = copy_of(trained_run, tmp_path)  # the module's run stays as training left it
    before = (trained_run / robust.ROBUSTNESS).read_bytes()
    r = CliRunner().invoke(main, ["eval", str(trained_run), "--corruptions", "gaussian_noise,brightness,underexposure",
                                  "--set", "eval.severities=[1,4]", "--set", "eval.corruption_per_class=4"])
    assert r.exit_code == 0, r.output
    assert "already evaluated" in r.output and (trained_run / robust.ROBUSTNESS).read_bytes() == before
    r = CliRunner().invoke(main, ["eval", str(trained_run), "--corruptions", "lighting",
                                  "--set", "eval.severities=2", "--set", "eval.corruption_per_class=4"])
    assert r.exit_code == 0, r.output
    result = json.loads((trained_run / robust.ROBUSTNESS).read_text())
    assert result["settings"]["severities"] == [2] and set(result["families"]) == {"lighting"}
    assert "forward passes" in r.output  # the cost, up front


@pytest.mark.parametrize("args, needle", [
    (["--corruptions", "gausian_noise"], "gaussian_noise"),
    (["--set", "eval.severities=[0, 3]"], "eval.severities"),
    (["--set", "eval.severities=6"], "eval.severities"),
    (["--set", "model.norm.alpha=0.1"], "only eval.*"),
    (["--corruptions", "none"], "nothing to evaluate"),
])
def test_lrn_eval_option_errors_are_one_line_exit_2_and_write_nothing(trained_run, args, needle):
    before = {p: (trained_run / p).read_bytes() for p in sorted(files(trained_run)) if (trained_run / p).is_file()}
    r = CliRunner().invoke(main, ["eval", str(trained_run), *args])
    assert r.exit_code == 2, r.output
    assert needle in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    after = {p: (trained_run / p).read_bytes() for p in sorted(files(trained_run)) if (trained_run / p).is_file()}
    assert after == before


def test_lrn_eval_on_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "x").mkdir()
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a run directory" in r.output
    assert files(tmp_path / "x") == set()


def test_a_run_that_is_not_completed_is_refused(tmp_path, trained_run):
    run = copy_of(trained_run, tmp_path)
    summary = json.loads((run / runs.SUMMARY).read_text())
    runs.write_json(run / runs.SUMMARY, {**summary, "status": "interrupted"})
    with pytest.raises(UserError, match="interrupted, not completed"):
        robust.evaluate_run(run, "noise")


def test_a_missing_corruptions_root_fails_before_training_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["train", "--config", SYNTH, "--out", str(out), "--name", "x",
                                  *sum((["--set", s] for s in FAST + EVAL), []),
                                  "--set", f"eval.corruptions_root={tmp_path / 'nope'}"])
    assert r.exit_code == 2, r.output
    assert "eval.corruptions_root" in r.output and not (out / "x").exists()


def test_lrn_eval_on_a_sweep_resumes_after_an_interrupt(tmp_path, monkeypatch):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: sw\nbase: {SYNTH}\nset: {{train.epochs: 1, train.threads: 1}}\nseeds: [0]\n"
                    "variants:\n  lrn: {}\n  none: {model.norm.type: none}\n  bn: {model.norm.type: batchnorm}\n"
                    "baseline: none\n")
    ablate(spec, out=tmp_path / "out", jobs=1, quiet=True)
    sweep = tmp_path / "out" / "sw"
    calls = []
    real = robust.evaluate_run

    def interrupted_at_second(*a, **k):
        calls.append(a[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(robust, "evaluate_run", interrupted_at_second)
    args = ["eval", str(sweep), "--corruptions", "noise", "--set", "eval.severities=[2]",
            "--set", "eval.corruption_per_class=2"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 130, r.output
    done = [d for d in sweep.iterdir() if (d / robust.ROBUSTNESS).is_file()]
    assert len(done) == 1 and "interrupted" in r.output
    monkeypatch.setattr(robust, "evaluate_run", real)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert r.output.count("already evaluated") == 1
    assert len([d for d in sweep.iterdir() if (d / robust.ROBUSTNESS).is_file()]) == 3
    assert "report refreshed" in r.output


def test_corrupted_bytes_do_not_depend_on_the_batch_size(trained_run):
    """eval.batch_size changes how the images are batched, not the measured numbers."""
    from lrn_cli.data import load_data
    from lrn_cli.trained import load_trained

    t = load_trained(trained_run)
    data = load_data(t.cfg.data)
    results = []
    for bs in (1, 7, 500):
        cfg = load_config(t.cfg, ["eval.corruptions=[shot_noise]", "eval.severities=[5]", f"eval.batch_size={bs}"])
        results.append(robust.evaluate(t.model, data, cfg, torch.device("cpu"), line=lambda s: None))
    accs = [r["corruptions"]["shot_noise"]["by_severity"]["5"]["acc"] for r in results]
    losses = [r["corruptions"]["shot_noise"]["by_severity"]["5"]["loss"] for r in results]
    assert accs[0] == accs[1] == accs[2]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) == pytest.approx(losses[2], rel=1e-5)


def test_corruptions_measured_before_with_the_same_settings_are_kept(tmp_path, trained_run):
    run = copy_of(trained_run, tmp_path)
    sets = ("--set", "eval.severities=[1, 4]", "--set", "eval.corruption_per_class=4")
    r = CliRunner().invoke(main, ["eval", str(run), "--corruptions", "gaussian_noise,brightness,underexposure,contrast",
                                  *sets])
    assert r.exit_code == 0, r.output
    assert "1 corruptions x 2 severities" in r.output and "3 corruptions already measured, kept" in r.output
    before = json.loads((trained_run / robust.ROBUSTNESS).read_text())
    after = json.loads((run / robust.ROBUSTNESS).read_text())
    assert after["settings"]["corruptions"] == ["gaussian_noise", "brightness", "contrast", "underexposure"]
    for name in ("gaussian_noise", "brightness", "underexposure"):
        assert after["corruptions"][name] == before["corruptions"][name]


@pytest.fixture(scope="module")
def imagenette_run(tmp_path_factory):
    """A one-epoch AlexNet run on a slice of Imagenette (3 classes) at the config's 112 px crops,
    with every corruption evaluated at its end."""
    from conftest import SHARED_DATA
    from test_folder import extract_slice

    archive = SHARED_DATA / "imagenette-128.tar.gz"
    if not archive.exists():
        pytest.skip(f"the Imagenette copy is not at {archive} (only the project's own checkout has it)")
    tmp = tmp_path_factory.mktemp("imagenette_robust")
    root, wnids = extract_slice(archive, tmp / "imagenette", classes=3, train=8, val=4)
    sets = [f"data.root={root}", "model.width=0.25", "train.epochs=1", "train.batch_size=8", "train.threads=1",
            "train.device=cpu", "eval.corruptions=all", "eval.severities=[3]", "eval.corruption_per_class=2"]
    run = train(str(REPO / "configs" / "imagenette_alexnet.yaml"), sets, out=tmp / "runs", name="r", quiet=True)
    return run.run_dir, root, wnids


def test_an_imagenette_run_is_evaluated_under_every_corruption_with_imagenet_parameters(imagenette_run):
    from lrn_cli.data.corruptions import CORRUPTIONS

    run_dir, _, _ = imagenette_run
    result = json.loads((run_dir / robust.ROBUSTNESS).read_text())
    assert result["settings"]["table"] == "imagenet" and result["settings"]["image_size"] == 112
    assert list(result["corruptions"]) == list(CORRUPTIONS) and result["settings"]["images"] == 6
    assert "center" in result["eval_transform"] and (run_dir / robust.GRID).is_file()


def test_an_imagenet_c_tree_is_read_in_place_of_corrupting_where_it_has_the_corruption(imagenette_run, tmp_path):
    """Released ImageNet-C images (224 px crops) are resized to the run's 112 px; names the
    release lacks (the lighting family) are corrupted on the fly, and each result says which."""
    from PIL import Image

    run_dir, root, wnids = imagenette_run
    tree = tmp_path / "imagenet-c"
    for wnid in wnids:
        for i, path in enumerate(sorted((root / "val" / wnid).iterdir())):
            out = tree / "gaussian_noise" / "3" / wnid / path.name
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.open(path).convert("RGB").resize((224, 224)).save(out)
    r = CliRunner().invoke(main, ["eval", str(run_dir), "--corruptions", "gaussian_noise,underexposure",
                                  "--set", "eval.severities=[3]", "--set", "eval.corruption_per_class=2",
                                  "--set", f"eval.corruptions_root={tree}"])
    assert r.exit_code == 0, r.output
    result = json.loads((run_dir / robust.ROBUSTNESS).read_text())
    assert result["corruptions"]["gaussian_noise"]["source"] == "released"
    assert result["corruptions"]["underexposure"]["source"] == "on_the_fly"
    assert "resized to 112" in result["released"]
    r = CliRunner().invoke(main, ["eval", str(run_dir), "--corruptions", "gaussian_noise", "--set",
                                  "eval.severities=[2]", "--set", f"eval.corruptions_root={tree}"])
    assert r.exit_code == 2 and str(tree / "gaussian_noise" / "2") in r.output


def test_ctrl_c_during_lrn_eval_of_a_run_exits_130_and_leaves_its_files_as_they_were(trained_run, tmp_path,
                                                                                      monkeypatch):
    run = copy_of(trained_run, tmp_path)
    before = {p: (run / p).read_bytes() for p in sorted(files(run)) if (run / p).is_file()}

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(robust, "on_the_fly", interrupted)
    r = CliRunner().invoke(main, ["eval", str(run), "--corruptions", "contrast", "--set", "eval.corruption_per_class=2"])
    assert r.exit_code == 130 and "interrupted" in r.output
    assert {p: (run / p).read_bytes() for p in sorted(files(run)) if (run / p).is_file()} == before
