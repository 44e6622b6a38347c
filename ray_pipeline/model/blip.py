"""BLIP: the captioning model itself, with no Ray in it: the Serve app's `Captioner` runs it, and the GPU
check measures it."""

from __future__ import annotations

import numpy as np

MAX_NEW_TOKENS = 30


class BlipCaptioner:
    """transformers' BlipForConditionalGeneration with its BlipProcessor, loaded once (fp16 on CUDA)."""

    def __init__(self, model: str, device: str | None = None):
        """`model`: a hub name or a folder saved with save_pretrained; `device`: cuda where torch sees a GPU."""
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        self.processor = BlipProcessor.from_pretrained(model)
        self.model = BlipForConditionalGeneration.from_pretrained(model, dtype=self.dtype).to(self.device).eval()

    def caption(self, pictures: list[np.ndarray]) -> list[str]:
        """One caption per picture ((H, W, 3) uint8 arrays)."""
        import torch
        from PIL import Image

        inputs = self.processor(images=[Image.fromarray(p) for p in pictures], return_tensors="pt")
        inputs = {k: v.to(self.device, self.dtype if v.is_floating_point() else None) for k, v in inputs.items()}
        with torch.inference_mode():
            tokens = self.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS)
        return [text.strip() for text in self.processor.batch_decode(tokens, skip_special_tokens=True)]
