"""Defaults: the one source of every default the CLI, the Serve app's `Settings` and the app's jobs share."""

from __future__ import annotations

MODEL = "ViT-B-32"  # OpenCLIP architecture
PRETRAINED = "laion2b_s34b_b79k"  # OpenCLIP pretrained tag
BLIP_MODEL = "Salesforce/blip-image-captioning-base"
CHROMA_PATH = "./chroma_data"  # embedded Chroma's folder
SERVE_APP = "default"  # the Serve application that runs the Embedder and the Captioner
MAX_PIXELS = 250_000_000  # pictures larger than this are refused (a decompression-bomb guard)
# The Serve app's previews (thumbnails, searches by photo) decode at most this many pixels of a picture: a
# JPEG or HEIC at its reduced scale, a PNG or TIFF in full. A bound on each request's memory.
PREVIEW_MAX_PIXELS = 50_000_000
# At most this many files to read run without a Ray job: in the CLI's own process when no cluster runs,
# in the Serve app for the HTTP API (INGEST_INLINE_MAX_FILES).
INLINE_MAX_FILES = 64
