"""Models: the app's CLIP models (its default, and those of `CLIP_EXTRA_MODELS`), each held by an Embedder
deployment of its own, and which of them wrote a collection: a collection is searched and written by the model
that made its vectors, whichever it is."""

from __future__ import annotations

from ray_pipeline.model.clip import ModelSpec
from ray_pipeline.model.embedders import ModelFacts
from ray_pipeline.records.chroma import same_model
from ray_pipeline.records.errors import StoreError


class ModelNotRun(StoreError):
    """A collection written by a model the app does not run."""


class AppModels:
    def __init__(self, specs: tuple[ModelSpec, ...], embedders: list):
        """`embedders`: a handle to each model's Embedder deployment, in the order of `specs` (the default first)."""
        self.specs = specs
        self.embedders = embedders
        self._facts: dict[int, ModelFacts] = {}

    async def facts(self, number: int) -> ModelFacts:
        """What the `number`th model records on a collection, asked once (another model's Embedder starts for it)."""
        if number not in self._facts:
            self._facts[number] = await self.embedders[number].model.remote()
        return self._facts[number]

    async def number_of(self, collection: str, metadata: dict) -> int:
        """Which model wrote the collection (its `metadata`): the first of the app's whose architecture it records
        and whose loaded weights are the ones it records (only those of that architecture are asked)."""
        for number, spec in enumerate(self.specs):
            if spec.architecture == metadata.get("model"):
                if same_model((await self.facts(number)).collection_metadata, metadata):
                    return number
        raise ModelNotRun(f"collection {collection!r} holds vectors from model {metadata.get('model')} (weights "
                          f"{metadata.get('weights')}), which this app does not run (it runs "
                          f"{', '.join(spec.label for spec in self.specs)}): reindex it into one of them")

    def number_labelled(self, label: str) -> int | None:
        """The number of the app's model of this label (`ModelSpec.label`); None where the app does not run it."""
        return next((number for number, spec in enumerate(self.specs) if spec.label == label.strip()), None)

    def listed(self) -> list[dict]:
        """`GET /models`: each model's label (what `create` and `reindex` take), architecture, and which is the default."""
        return [{"name": spec.label, "architecture": spec.architecture, "default": number == 0}
                for number, spec in enumerate(self.specs)]
