"""``/v1/models``: the served model version, its named LoRA adapters (a request picks one by
``model``) and the embedder once it is loaded."""

import time

from server.api.openai.protocol import (
    ModelCard,
    ModelList,
)
from server.runtime.services import Services


class ModelsServing:
    """GET /v1/models."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def models(self) -> ModelList:
        meta = self.services.model_meta
        engine = self.services.engine
        cards = [
            ModelCard(
                id=self.services.model_id,
                created=meta.created if meta.created is not None else int(time.time()),
                quantization=meta.quantization,
                context_length=engine.n_ctx_per_slot if engine else None,
                version=self.services.served_version,
            )
        ]
        created = cards[0].created
        for name in engine.adapter_names if engine else ():
            cards.append(
                ModelCard(id=name, created=created, kind="adapter", parent=self.services.model_id)
            )
        embedder = self.services.embedder.loaded
        if embedder is not None:
            cards.append(ModelCard(id=embedder.name, created=int(time.time()), kind="embedding"))
        return ModelList(data=cards)
