"""The papers' recipes (conf/recipe/<name>.yaml, ``recipe=``): each names only real config
fields, applies to a space's trials on real data (``recipe=auto``) but not on the embedded
default, can be forced or turned off, ranks below the space's ``fixed`` settings, and the
``embedded`` block of a space applies only on synthetic data."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import REPO
from vidablate.config import ExperimentConfig
from vidablate.sweep.cli import CONFIG_DIR, SECTIONS
from vidablate.sweep.space import (
    RECIPE_DIR,
    SHIPPED_SPACES,
    SpaceError,
    expand,
    load_space,
    recipe_preset,
)

RECIPES = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml") if p.stem not in ("auto", "none"))
SPACES = SHIPPED_SPACES


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_names_real_fields_and_validates_on_real_data(name, placeholder_data):
    recipe = recipe_preset(name, "recipe")
    assert set(recipe) <= set(SECTIONS)
    data = {"dataset": "hmdb51", "train_manifest": str(placeholder_data / "hmdb51/train_split1.parquet"),
            "test_manifest": str(placeholder_data / "hmdb51/test_split1.parquet"),
            "class_names_file": str(placeholder_data / "hmdb51/classnames.csv"),
            "num_classes": 51, "protocol": "closed_set"}
    raw = {**recipe, "data": {**recipe.get("data", {}), **data}}
    ExperimentConfig.from_dict(raw).validate()  # unknown keys or bad values raise


def test_variant_recipes_extend_their_base():
    few = recipe_preset("xclip_few_shot", "recipe")
    assert few["data"]["num_frames"] == 32 and few["trainer"]["lr_visual"] == 2e-6
    assert few["trainer"]["adam_beta2"] == 0.98  # from xclip.yaml through its defaults list
    with pytest.raises(SpaceError, match="no such recipe"):
        recipe_preset("xclip_typo", "recipe")


def test_auto_applies_the_space_recipe_on_real_data_only(placeholder_data):
    real = expand(load_space(SPACES / "xclip_fewshot_real.yaml"))
    assert {t.recipe for t in real} == {"xclip_few_shot"}
    tr = real[0].experiment["trainer"]
    assert (tr["epochs"], tr["lr_visual"], tr["schedule_unit"]) == (50, 2e-6, "step")
    assert real[0].experiment["eval"]["temporal_views"] == 4
    synthetic = expand(load_space(SPACES / "xclip_fewshot.yaml"))
    assert {t.recipe for t in synthetic} == {""}
    assert synthetic[0].experiment["trainer"]["lr_visual"] != 2e-6
    forced = expand(load_space(SPACES / "xclip_fewshot.yaml"), recipe="xclip_few_shot")
    assert forced[0].experiment["trainer"]["lr_visual"] == 2e-6
    off = expand(load_space(SPACES / "xclip_fewshot_real.yaml"), recipe="none")
    assert {t.recipe for t in off} == {""} and off[0].experiment["trainer"]["schedule_unit"] == "epoch"


def test_the_spaces_fixed_settings_beat_the_recipe(placeholder_data):
    trials = expand(load_space(SPACES / "xclip_zeroshot_cross.yaml"))
    assert {t.recipe for t in trials} == {"xclip"}
    assert trials[0].experiment["data"]["num_frames"] == 32  # fixed; the recipe says 8
    assert trials[0].experiment["trainer"]["lr_visual"] == 8e-6  # from the recipe


def test_embedded_settings_apply_on_synthetic_data_only(placeholder_data):
    space = load_space(SPACES / "xclip_prompts.yaml")
    synthetic = expand(space)
    assert synthetic[0].experiment["model"]["learnable_ctx_length"] == 8
    hmdb = {"data": OmegaConf.to_container(OmegaConf.load(
        REPO / "platform/vidablate/conf/data/hmdb51.yaml"), resolve=True)}
    hmdb["model"] = {"backbone": "ViT-B-16-quickgelu", "pretrained": "openai"}
    real = expand(space, base=hmdb)
    assert {t.recipe for t in real} == {"xclip"}
    assert real[0].experiment["model"]["learnable_ctx_length"] == 16


def test_recipe_is_a_hydra_group_on_the_command_line():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        default = OmegaConf.to_container(compose(config_name="ablate"), resolve=True)
        forced = OmegaConf.to_container(compose(config_name="ablate",
                                                overrides=["recipe=stdd"]), resolve=True)
    assert default["recipe_name"] == "auto" and forced["recipe_name"] == "stdd"
    assert forced["trainer"]["grad_clip_norm"] == 1.0  # the group's values compose in too
    assert forced["trainer"] == {**default["trainer"], **recipe_preset("stdd", "r")["trainer"]}
