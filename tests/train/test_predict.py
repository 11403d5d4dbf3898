"""``vidablate predict``: a saved trial rebuilt from its checkpoint scores a real mp4 (and IMU
CSV) as the trained model does, from a checkpoint folder or from its MLflow run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from vidablate.cli.predict import main as predict_main
from vidablate.config import ExperimentConfig
from vidablate.data.clips import ManifestClips
from vidablate.data.imu import write_imu
from vidablate.data.protocols import samplings
from vidablate.data.synthetic import class_names
from vidablate.data.video import write_video
from vidablate.errors import ConfigError
from vidablate.model import build_model
from vidablate.sweep.space import SHIPPED_SPACES, expand, load_space, select_rows
from vidablate.sweep.tracking import CHECKPOINT_TAG
from vidablate.train.checkpoint import save_state
from vidablate.train.loop import seed_everything
from vidablate.train.predict import predict

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """An IS-CLIP (SIRM + SGAM) trial's checkpoint with trained-looking (perturbed) weights,
    a clip as mp4 and its IMU as CSV."""
    root = tmp_path_factory.mktemp("trial")
    space = select_rows(load_space(SHIPPED_SPACES / "isclip_modules.yaml"), ["sirm_sgam"])
    experiment = expand(space, overrides={"model": {"pretrained": None}}, seeds=[0])[0].experiment
    cfg = ExperimentConfig.from_dict(experiment).validate()
    seed_everything(cfg.trainer.seed)
    model = build_model(cfg.model, cfg.data.num_frames)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    save_state(root, model, {}, {}, 15, [], None, experiment=experiment)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (48, 64, 64, 3), dtype=np.uint8)
    video = write_video(root / "clip.mp4", frames, fps=8.0)
    t = np.arange(0, 6.0, 1 / 50)
    imu = write_imu(root / "clip.csv", t, rng.normal(size=(len(t), 6)).astype(np.float32))
    return {"dir": root, "experiment": experiment, "cfg": cfg, "model": model, "video": video,
            "imu": imu}


def _scores(model, cfg, video, imu) -> torch.Tensor:
    """The trained model's class probabilities on the clip, computed here from the model in
    memory (not the checkpoint)."""
    _, sampling = samplings(cfg)
    item = ManifestClips([{"video": str(video), "imu": str(imu), "label": 0}], video.parent,
                         sampling, fps=cfg.data.fps, imu_rate=cfg.data.imu_rate,
                         use_imu=True, on_corrupt="fail")[0]
    model.eval()
    with torch.no_grad():
        logits, _ = model(item["video"][None], item["imu"][None],
                          class_names(cfg.data.num_classes))
    return logits.float().softmax(dim=-1)[0]


def test_predict_matches_the_trained_model(trial):
    top = predict(trial["dir"], trial["experiment"], trial["video"], trial["imu"], k=5)
    probs = _scores(trial["model"], trial["cfg"], trial["video"], trial["imu"])
    want = probs.topk(5)
    assert [p.index for p in top] == want.indices.tolist()
    assert [p.score for p in top] == pytest.approx(want.values.tolist(), rel=1e-5)
    names = class_names(trial["cfg"].data.num_classes)
    assert [p.name for p in top] == [names[i] for i in want.indices.tolist()]
    seed_everything(trial["cfg"].trainer.seed)  # control: the untrained weights score otherwise
    fresh = build_model(trial["cfg"].model, trial["cfg"].data.num_frames)
    untrained = _scores(fresh, trial["cfg"], trial["video"], trial["imu"])
    assert not torch.allclose(untrained, probs, atol=1e-4)


def test_predict_needs_the_imu_of_an_isclip_row_and_a_real_file(trial, tmp_path):
    with pytest.raises(ConfigError, match="--imu"):
        predict(trial["dir"], trial["experiment"], trial["video"], None)
    with pytest.raises(ConfigError, match="no such file"):
        predict(trial["dir"], trial["experiment"], tmp_path / "missing.mp4", trial["imu"])


def test_cli_from_checkpoint_folder_and_from_mlflow_run(trial, tmp_path, capsys):
    assert predict_main([str(trial["dir"]), str(trial["video"]), "--imu", str(trial["imu"]),
                         "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("1. ")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e"), tags={
        CHECKPOINT_TAG: str(trial["dir"])}).info.run_id
    client.log_text(run, yaml.safe_dump({"row": "sirm_sgam", **trial["experiment"]}),
                    "config.yaml")
    assert predict_main([run, str(trial["video"]), "--imu", str(trial["imu"]), "-k", "3",
                         "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.strip().splitlines() == lines
    labels = tmp_path / "labels.txt"
    labels.write_text("a red ball moving left\na blue cube spinning\n")
    assert predict_main([str(trial["dir"]), str(trial["video"]), "--imu", str(trial["imu"]),
                         "--classes", str(labels)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2  # scored its own names
    assert predict_main(["no-such-run", str(trial["video"]), "--tracking-uri", uri]) == 2
    assert "neither a checkpoint folder nor a run" in capsys.readouterr().out
