"""Stage recipes: the paper's optimizer and loss weights, the stage chain, trainable groups."""

from __future__ import annotations

import pytest

from mavin_ops.training import recipes
from mavin_ops.training.recipes import PARAM_GROUPS, PRESETS, STAGES, RecipeError, StageRecipe, get_recipe, match_groups


def test_stages_chain_in_the_paper_order():
    assert STAGES == ("id", "multishot", "av", "joint")
    assert [recipes.previous_stage(s) for s in STAGES] == [None, "id", "multishot", "av"]
    assert recipes.stage_chain("av") == ("id", "multishot", "av")


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("stage", STAGES)
def test_every_recipe_uses_the_papers_optimizer_and_loss_weights(stage, preset):
    r = get_recipe(stage, preset)
    assert r.betas == (0.9, 0.95) and r.eps == 1e-8  # MAVIN C.2
    assert r.loss_weights == {"video": 0.85, "audio": 0.15}
    if preset != "tiny":  # tiny trains from random init with a larger lr (documented in recipes.py)
        assert r.lr == 5e-5


def test_paper_schedule_and_debug_is_a_handful_of_steps():
    assert [get_recipe(s, "paper").steps for s in STAGES] == [60_000, 20_000, 15_000, 15_000]
    assert all(1 <= get_recipe(s, "debug").steps <= 10 for s in STAGES)
    assert all(get_recipe(s, "tiny").steps >= 50 for s in STAGES)


def test_lr_schedule_warms_up_and_decays_along_a_cosine():
    r = get_recipe("joint", "debug", steps=10, lr=1e-3, warmup_steps=2, decay="cosine", min_lr_ratio=0.1)
    lrs = [r.lr_at(i) for i in range(10)]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)  # linear warm-up
    assert lrs[2] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs[2:], lrs[3:]))  # then strictly down
    assert r.lr_at(10) == pytest.approx(1e-4)  # ends at min_lr_ratio * lr
    flat = get_recipe("joint", "debug", lr=1e-3)
    assert {flat.lr_at(i) for i in range(5)} == {1e-3}
    with pytest.raises(RecipeError, match="decay 'linear' is unknown"):
        get_recipe("joint", "debug", decay="linear")


def test_joint_interleaves_the_data_of_every_earlier_stage():
    earlier = {sub for s in ("id", "multishot", "av") for sub, _ in get_recipe(s, "paper").mixture}
    joint = get_recipe("joint", "paper")
    assert {sub for sub, _ in joint.mixture} == earlier and len(joint.mixture) == 3
    assert joint.trainable == ("all",)


def test_trainable_groups_select_the_real_models_parameters():
    from mavin_ops.model import build_model

    names = [n for n, _ in build_model("debug").named_parameters()]
    for group, patterns in PARAM_GROUPS.items():
        assert match_groups(names, patterns), f"group {group} matches no parameter of the debug model"
    ident = set(match_groups(names, get_recipe("id", "paper").patterns))
    assert "denoiser.role_embed.weight" in ident and any("timbre_encoder" in n for n in ident)
    assert "denoiser.blocks.0.attn1.to_q.weight" in ident and "denoiser.blocks.0.attn2.to_q.weight" not in ident
    text = set(match_groups(names, get_recipe("multishot", "paper").patterns))
    assert "denoiser.blocks.0.audio_attn2.to_q.weight" in text and "text_encoder.token_embed.weight" in text
    assert not any(n.startswith("denoiser.blocks") and (".ff." in n or "audio_ff" in n or "_to_" in n) for n in text)
    av = set(match_groups(names, get_recipe("av", "paper").patterns))
    assert "denoiser.blocks.0.audio_to_video_attn.to_q.weight" in av and "denoiser.blocks.0.video_to_audio_attn.to_q.weight" in av
    assert "denoiser.blocks.0.ff.fc1.weight" not in av and "denoiser.blocks.0.audio_ff.fc1.weight" in av


def test_overrides_are_checked():
    assert get_recipe("id", "debug", steps=3, zero_stage=0).steps == 3
    with pytest.raises(RecipeError, match="unknown recipe field.*stepz"):
        get_recipe("id", "debug", stepz=3)
    with pytest.raises(RecipeError, match="unknown stage 'pretrain'; use one of base, id, multishot, av, joint"):
        get_recipe("pretrain", "debug")
    with pytest.raises(RecipeError, match="unknown training preset 'huge'"):
        get_recipe("id", "huge")
    with pytest.raises(RecipeError, match="ZeRO stage 3 is not supported"):
        get_recipe("id", "debug", zero_stage=3)
    with pytest.raises(RecipeError, match="unknown subset 'faces'"):
        get_recipe("id", "debug", mixture=(("faces", 1.0),))
    with pytest.raises(RecipeError, match="loss_weights needs exactly"):
        get_recipe("id", "debug", loss_weights={"video": 1.0})


def test_recipe_round_trips_through_json():
    r = get_recipe("joint", "tiny")
    import json

    assert StageRecipe.from_dict(json.loads(r.to_json())) == r


def test_public_api_names_resolve():
    import importlib

    import mavin_ops.training as pkg

    for name in pkg.__all__:
        assert hasattr(pkg, name), name
    for mod in ("adapter", "checkpoint", "data", "engine", "golden", "manifests", "mavin_adapter", "recipes", "trainer"):
        m = importlib.import_module(f"mavin_ops.training.{mod}")
        assert m.__all__ and all(hasattr(m, n) for n in m.__all__), mod


def test_the_paper_model_keeps_its_pretrained_parts_frozen_in_every_stage():
    """Built on the meta device (no memory, no weights read): every stage of the paper recipe
    trains only denoiser parameters -- the frozen UMT5 text encoder and the audio VAE, which
    the 'text', 'audio_tower' and 'all' groups also match by name, stay frozen -- and all it
    trains is in what a checkpoint saves."""
    from mavin_ops.model import build_model
    from mavin_ops.model import config as mconfig
    from mavin_ops.training.mavin_adapter import MavinAdapter
    from mavin_ops.training.recipes import STAGES, get_recipe, match_groups
    from mavin_ops.training.trainer import trainable_names

    cfg = mconfig.preset("paper")
    model = build_model(cfg, device="meta", load_pretrained=False)
    adapter = MavinAdapter("paper", config=cfg)
    names = [n for n, _ in model.named_parameters()]
    saved = set(model.trainable_state_dict())
    matched_frozen = 0
    for stage in STAGES:
        recipe = get_recipe(stage, "paper")
        chosen = trainable_names(model, adapter, recipe)
        by_name = set(match_groups(names, recipe.patterns))
        assert chosen and chosen <= saved and all(n.startswith("denoiser.") for n in chosen), stage
        assert chosen == {n for n in by_name if n.startswith("denoiser.")}, stage  # the recipe's groups, less the frozen parts
        matched_frozen += len(by_name - chosen)
    assert matched_frozen > 500  # the groups do match frozen parts (text encoder, audio VAE): the filter is what holds them
    joint = trainable_names(model, adapter, get_recipe("joint", "paper"))
    assert not any(n.startswith(("text_encoder.", "audio_codec.", "video_codec.")) for n in joint)


def test_tiny_fine_tunes_a_base_with_the_papers_freezing():
    """The base stage trains everything at a constant lr (chunks add up); a tiny release then
    fine-tunes it, each stage only its own groups (MTSS 4.2.2), joint everything."""
    from mavin_ops.training.recipes import BASE_STAGE, needs_base

    base = get_recipe(BASE_STAGE, "tiny")
    assert base.trainable == ("all",) and base.decay == "constant" and base.warmup_steps > 0 and base.mixture == (("all", 1.0),)
    assert base.lr_at(base.steps // 2) == base.lr_at(base.steps - 1) == base.lr
    assert needs_base("tiny") and needs_base("paper") and not needs_base("debug")
    assert get_recipe("id", "tiny").trainable == ("identity", "self_attn")
    assert get_recipe("multishot", "tiny").trainable == ("text",)
    assert get_recipe("av", "tiny").trainable == ("audio_tower", "av_cross")
    assert get_recipe("joint", "tiny").trainable == ("all",)
    joint = get_recipe("joint", "tiny")
    assert joint.decay == "cosine" and joint.lr_at(joint.steps - 1) < 0.1 * joint.lr
    assert get_recipe("id", "debug").trainable == ("identity", "self_attn", "all")  # no base: id trains the backbone too
