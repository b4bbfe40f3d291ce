"""examples/reward_finetune.py: a LoRA fine-tuned with the identity reward on the tiny offline SDXL
inpainting pipeline -- the evaluation reward (same prompt, same seed) rises, the LoRA changes, the base
weights do not, the saved LoRA reproduces the result, and bad invocations fail before any model loads."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nearid.io.errors import ModelNotAvailableError, NearIDError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "reward_finetune.py"


def _example():
    spec = importlib.util.spec_from_file_location("reward_finetune", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _base_weights(pipe) -> dict[str, torch.Tensor]:
    """Every weight that is not a LoRA weight, under the names it has without an adapter."""
    weights = {}
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        for name, tensor in getattr(pipe, component).state_dict().items():
            if "lora_" not in name:
                weights[f"{component}.{name.replace('.base_layer', '')}"] = tensor.detach().clone()
    return weights


@pytest.mark.slow
def test_the_reward_rises_the_lora_changes_and_the_base_does_not(tmp_path):
    from nearid.tiny.pipelines import build_tiny_sdxl_inpaint

    example = _example()
    out = tmp_path / "lora"
    run = example.main(["--steps", "4", "--eval-every", "2", "--out", str(out)])

    steps = [step for step, _ in run.curve]
    rewards = [value for _, value in run.curve]
    assert steps == [0, 2, 4]
    assert rewards[-1] > rewards[0] + 1e-3, rewards  # the same prompt and seed, before vs after

    lora_b = [p for name, p in run.pipe.unet.named_parameters() if "lora_B" in name]
    assert lora_b and all(float(p.detach().abs().max()) > 0 for p in lora_b)  # peft starts every B at exactly zero
    fresh = build_tiny_sdxl_inpaint("tiny", torch.float32)  # the same seeded weights the run started from
    before, after = _base_weights(fresh), _base_weights(run.pipe)
    assert before.keys() == after.keys()
    assert [name for name in before if not torch.equal(before[name], after[name])] == []

    assert sorted(p.name for p in out.iterdir()) == [
        ".nearid-output.json",
        "after.png",
        "before.png",
        "pytorch_lora_weights.safetensors",
        "rewards.json",
    ]
    summary = json.loads((out / "rewards.json").read_text())
    assert [tuple(point) for point in summary["curve"]] == run.curve and len(summary["train_rewards"]) == 4

    # the saved LoRA, loaded into a fresh pipeline the way diffusers users load one, gives the trained result
    fresh.load_lora_weights(out)
    args = example.parse_args(["--out", str(tmp_path / "unused")])
    _, scene, mask = example.load_inputs(args)
    cond = example.conditioning(fresh, args.prompt, scene, mask)
    with torch.no_grad():
        image = example.generate(fresh, cond, args.eval_seed, args.denoise_steps, grad_last=False)
    trained = torch.from_numpy(np.array(run.after)).float()
    reloaded = torch.from_numpy(np.array(example.to_picture(image))).float()
    assert float((trained - reloaded).abs().max()) <= 1.0


def test_bad_invocations_fail_before_any_model_loads(tmp_path, monkeypatch):
    example = _example()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(NearIDError, match="not an empty folder"):
        example.check_arguments(example.parse_args(["--out", str(full)]))
    assert (full / "keep.txt").read_text() == "mine"
    reference = tmp_path / "ref.png"
    reference.write_bytes(b"")
    with pytest.raises(NearIDError, match="is also an input"):
        example.check_arguments(example.parse_args(["--out", str(reference), "--reference", str(reference)]))
    with pytest.raises(ModelNotAvailableError, match="HF_HUB_OFFLINE"):
        example.check_arguments(
            example.parse_args(["--out", str(tmp_path / "o"), "--pipeline", "owner/some-inpainting"])
        )
    assert not (tmp_path / "o").exists()


def test_the_script_says_one_line_and_exits_2_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(EXAMPLE.parents[1] / "src")}
    command = [sys.executable, str(EXAMPLE), "--out", str(tmp_path / "o"), "--pipeline", "owner/some-inpainting"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "owner/some-inpainting" in lines[0] and "hf download" in lines[0]
    assert not (tmp_path / "o").exists()
