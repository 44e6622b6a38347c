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


BLIP_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "cat", "cup", "rocket",
              "flower", "person", "the", "on", "table", "red", "sky", "with"]


def save_blip(folder: Path, seed: int = 0, base: bool = False) -> Path:
    """A seeded, randomly initialised BLIP captioner of transformers' real classes, saved with
    save_pretrained (model, tokenizer, image processor), as BLIP_MODEL points at a directory: tiny for
    the tests, or with `base` of blip-image-captioning-base's sizes (384-pixel input, 12 layers each side)
    for measuring, its vocabulary kept small."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(BLIP_WORDS) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    side = 384 if base else 64
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": side, "width": side}), tokenizer=tokenizer)
    tokens = {"vocab_size": len(BLIP_WORDS), "bos_token_id": 5, "pad_token_id": 0, "sep_token_id": 3, "eos_token_id": 3}
    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    config = BlipConfig(
        text_config={**tokens, **({} if base else {**small, "max_position_embeddings": 64})},
        vision_config={"image_size": side, **({} if base else {**small, "patch_size": 16})},
        **({} if base else {"projection_dim": 32}),
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
