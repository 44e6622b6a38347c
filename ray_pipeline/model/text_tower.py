"""Text tower: a search's query embedded without importing torch or OpenCLIP (seconds of a cold command's
start), through an ONNX export of the collection's text tower, made once per model and kept in a cache.

The export is made the first time a model's text is embedded by torch (`cache_text_tower`), checked against
torch's own vector of the same text (cosine at least MIN_AGREEMENT), and written with what its tokenizer needs.
Later searches (`cached_text_tower`) tokenise with `ClipTokenizer`, a port of OpenCLIP's own tokenizer that
needs no torch, and run the tower with onnxruntime. A model whose tokenizer is not OpenCLIP's simple one (a
Hugging Face tokenizer) has no export: its searches load torch, as before.

The cache is a folder of the user's (`$XDG_CACHE_HOME/ray-photo-embeddings/text-towers`, or under ~/.cache),
one export per model, named by the model's identity as the collection records it (architecture, weights, and
the model-config file's contents): the weights' identity is their content's SHA-256, so an export never
outlives the weights it was made from.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.util
import json
import logging
import os
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from ray_pipeline.core.cache import user_cache
from ray_pipeline.model import clip as clip_model

logger = logging.getLogger(__name__)

MIN_AGREEMENT = 0.9999  # cosine of the export's vector and torch's, for the same text
OPSET = 17


def cache_folder() -> Path:
    return Path(user_cache()) / "text-towers"


def model_key(collection_metadata: dict) -> str | None:
    """The name of a model's export: a hash of its identity as the collection records it; None where the
    record does not tell the model exactly (no weights recorded)."""
    model, weights = collection_metadata.get("model"), collection_metadata.get("weights")
    if not model or not weights:
        return None
    config = collection_metadata.get("model_config_file")
    if config:
        try:
            config_text = Path(config).read_text(encoding="utf-8")
        except OSError:
            return None
    else:
        config_text = ""
    return hashlib.sha256(json.dumps([model, weights, config_text]).encode()).hexdigest()[:32]


class ClipTokenizer:
    """OpenCLIP's simple tokenizer (the byte-pair encoding of OpenAI's CLIP, MIT licence), without torch: texts
    to (N, context_length) int64 token ids, as `open_clip.tokenizer.SimpleTokenizer` makes them."""

    CLEANERS = ("lower", "whitespace")

    def __init__(self, context_length: int = 77, clean: str = "lower"):
        import regex

        if clean not in self.CLEANERS:
            raise ValueError(f"cleaning {clean!r} is not ported")
        self.context_length = context_length
        self.lower = clean == "lower"
        self.byte_encoder = _bytes_to_unicode()
        merges = gzip.open(_vocabulary()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
        pairs = [tuple(merge.split()) for merge in merges]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(pair) for pair in pairs]
        specials = ["<start_of_text>", "<end_of_text>"]
        self.encoder = {token: i for i, token in enumerate(vocab + specials)}
        self.ranks = dict(zip(pairs, range(len(pairs))))
        self.cache = {token: token for token in specials}
        self.pattern = regex.compile("|".join(specials) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                                     regex.IGNORECASE)
        self.start, self.end = self.encoder[specials[0]], self.encoder[specials[1]]

    def _clean(self, text: str) -> str:
        import ftfy

        text = " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).strip().split()).strip()
        return text.lower() if self.lower else text

    def _bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            first, second = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if (first, second) not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        self.cache[token] = " ".join(word)
        return self.cache[token]

    def encode(self, text: str) -> list[int]:
        tokens: list[int] = []
        for piece in self.pattern.findall(self._clean(text)):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            tokens.extend(self.encoder[bpe] for bpe in self._bpe(piece).split(" "))
        return tokens

    def __call__(self, texts: list[str]) -> np.ndarray:
        ids: np.ndarray = np.zeros((len(texts), self.context_length), np.int64)
        for row, text in enumerate(texts):
            tokens = [self.start, *self.encode(text), self.end]
            if len(tokens) > self.context_length:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.end
            ids[row, : len(tokens)] = tokens
        return ids


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


def _vocabulary() -> str:
    """OpenCLIP's byte-pair vocabulary file, found without importing OpenCLIP (which imports torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")


class OnnxTextTower:
    """A model's text tower as exported: tokenised texts in, unit vectors out, with onnxruntime on the CPU."""

    def __init__(self, folder: Path):
        import onnxruntime

        settings = json.loads((folder / "tokenizer.json").read_text())
        self.tokenizer = ClipTokenizer(settings["context_length"], settings["clean"])
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(folder / "text.onnx"), options, providers=["CPUExecutionProvider"])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        (features,) = self.session.run(None, {"tokens": self.tokenizer(texts)})
        features = np.asarray(features, np.float32)
        return features / np.linalg.norm(features, axis=1, keepdims=True)


def cached_text_tower(collection_metadata: dict) -> OnnxTextTower | None:
    """The export of the collection's model's text tower, where one was made; else None."""
    key = model_key(collection_metadata)
    folder = cache_folder() / key if key else None
    if folder is None or not (folder / "text.onnx").is_file():
        return None
    try:
        return OnnxTextTower(folder)
    except Exception as exc:  # a broken or partial export: torch answers, and the export is made again
        logger.warning("the text tower's export at %s cannot be used (%s: %s)", folder, type(exc).__name__, exc)
        return None


def cache_text_tower(collection_metadata: dict, resolved: clip_model.ResolvedModel, text: str) -> bool:
    """Export the text tower of `resolved` (the collection's model, as `clip.resolve` gave it) into the cache,
    once, where its tokenizer is OpenCLIP's simple one; kept only if it gives torch's vector for `text` (in
    fp32, at cosine MIN_AGREEMENT at least). Whether an export is there now. Never fails a search: a cache
    that cannot be written leaves searches on torch."""
    key = model_key(collection_metadata)
    if key is None or (cache_folder() / key / "text.onnx").is_file():
        return key is not None
    try:
        return _export(cache_folder() / key, resolved, text)
    except Exception as exc:
        logger.warning("the text tower could not be exported for searches without torch (%s: %s)", type(exc).__name__, exc)
        return False


def _export(folder: Path, resolved: clip_model.ResolvedModel, text: str) -> bool:
    import open_clip
    import torch

    tokenizer = open_clip.get_tokenizer(resolved.architecture)
    clean = getattr(getattr(tokenizer, "clean_fn", None), "__name__", "").removeprefix("_clean_")
    if type(tokenizer).__name__ != "SimpleTokenizer" or tokenizer.reduction_fn is not None or clean not in ClipTokenizer.CLEANERS:
        return False  # another tokenizer: its searches keep loading torch
    settings = {"context_length": int(tokenizer.context_length), "clean": clean}
    network = clip_model.load(resolved).float().eval()

    class TextTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.network = network

        def forward(self, tokens):
            return self.network.encode_text(tokens)

    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        made = Path(scratch)
        tokens = torch.from_numpy(ClipTokenizer(int(tokenizer.context_length), clean)(["a photo", text]))
        # The exporter's notes on how it spelt an operator are for its authors, not for a user's search.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            torch.backends.mha.set_fastpath_enabled(False)  # its fused attention has no ONNX form
            try:
                torch.onnx.export(TextTower(), (tokens,), str(made / "text.onnx"), input_names=["tokens"],
                                  output_names=["features"], dynamic_axes={"tokens": {0: "texts"}, "features": {0: "texts"}},
                                  opset_version=OPSET, dynamo=False)
            finally:
                torch.backends.mha.set_fastpath_enabled(True)
        (made / "tokenizer.json").write_text(json.dumps(settings))
        with torch.no_grad():
            expected = torch.nn.functional.normalize(network.encode_text(tokens[1:]), dim=-1)[0].numpy()
        agreement = float(np.dot(OnnxTextTower(made).embed_texts([text])[0], expected))
        if agreement < MIN_AGREEMENT:
            logger.warning("the text tower's export disagrees with torch (cosine %.6f): not kept", agreement)
            return False
        os.replace(made, folder)  # whole or not at all: a search never finds half an export
        made.mkdir()  # for the temporary folder's own clean-up
    logger.info("text tower exported for searches without torch: %s (cosine %.6f with torch's)", folder, agreement)
    return True
