"""Seeded, randomly initialised OpenCLIP checkpoints of the real classes, for the tests and benchmarks
(no pretrained weights can be downloaded on machines without a model hub)."""

from __future__ import annotations

import json
from pathlib import Path

# A CLIP of the same classes as ViT-B-32, small enough for a 2-core test machine.
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def save_checkpoint(folder: Path, architecture: str, seed: int) -> Path:
    """A state dict (torch.save) of `architecture`, initialised from `seed`: what --checkpoint loads."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.create_model(architecture)
    checkpoint = Path(folder) / f"{architecture}-seed{seed}.pt"
    torch.save(model.state_dict(), checkpoint)
    return checkpoint


def save_tiny_clip(folder: Path, seed: int) -> tuple[Path, Path]:
    """A model-config JSON (pass it as --model) and a seeded checkpoint of the tiny CLIP."""
    import open_clip

    config = Path(folder) / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    return config, save_checkpoint(folder, "tiny-clip", seed)
