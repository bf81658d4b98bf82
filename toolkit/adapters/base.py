"""The adapter contract: what a model family declares so that every method can explain it, and the adapter of the
families declared as data (toolkit/families/families.yaml, or a user's YAML entry)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn

from ..core.capture import Recorder
from ..core.lrp import PropagationRules
from ..core.spec import ModelSpec
from ..errors import InputError
from ..families import Family
from ..labels import find_label


@dataclass
class Batch:
    """Model inputs for a batch, plus what is needed to show the result to a person.

    ``token_mask`` marks real (non-padding) positions; ``content_mask`` the positions an
    explanation is about (image patches, text tokens other than padding).
    """

    model_inputs: dict[str, torch.Tensor]
    token_mask: torch.Tensor
    content_mask: torch.Tensor
    samples: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return self.token_mask.shape[0]


class ModelAdapter(ABC):
    """One model family: where its attention lives, its token layout, and its prediction target."""

    family: ClassVar[str]
    modality: ClassVar[str]
    generation: ClassVar[bool] = False  # True: the adapter explains prompts itself (explain(), predict())
    examples: ClassVar[str] = ""

    def __init__(self, model: nn.Module, processor: Any = None):
        self.model = model
        self.processor = processor
        self._spec: ModelSpec | None = None
        self.check_processor()

    def check_processor(self) -> None:
        """Refuse a processor of the wrong kind (an image processor for a text model...) when the explainer is
        built, rather than deep inside the first explanation."""

    def wrong_processor(self, needed: str) -> InputError:
        """The error for a processor of the wrong kind; ``needed`` says what the family takes."""
        return InputError(f"{type(self.model).__name__} ({self.family}) takes {needed} as its processor; got "
                          f"a {type(self.processor).__name__}.")

    def check_inputs(self, items: list, text_pair: list | None) -> None:
        """Checks of every input of a call that are cheap (types, empty texts, missing files), made before the
        first batch runs; :meth:`prepare` reads and checks the rest."""

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this adapter knows ``model``'s architecture (adapters added with register_adapter say so here;
        declared families are matched by their entry's ``match``)."""
        return False

    @abstractmethod
    def build_spec(self) -> ModelSpec:
        """The layers and head of the model, as references to its own modules."""

    @abstractmethod
    def prepare(self, inputs: Any, text_pair: Any = None, first_index: int = 0) -> Batch:
        """Turn raw or preprocessed inputs into a :class:`Batch`; errors name inputs by their position in
        the whole call (``first_index`` is the position of ``inputs[0]``)."""

    @abstractmethod
    def logits(self, batch: Batch) -> torch.Tensor:
        """Run the model and return class logits (B, C)."""

    @abstractmethod
    def input_relevance(self, rec: Recorder, first_layer_relevance: torch.Tensor, batch: Batch,
                        rules: PropagationRules) -> torch.Tensor:
        """Map LRP relevance at the first layer's input back to the model's input units, by the method's rules."""

    def input_modules(self) -> list[nn.Module]:
        """Modules whose calls :meth:`input_relevance` reads."""
        return []

    @property
    def kind(self) -> str:
        """What the model is, for messages: "a text classifier", "an image classifier"."""
        return f"{'an' if self.modality[0] in 'aeiou' else 'a'} {self.modality} classifier"

    @property
    def spec(self) -> ModelSpec:
        if self._spec is None:
            self._spec = self.build_spec()
        return self._spec

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def labels(self) -> dict[int, str]:
        id2label = getattr(getattr(self.model, "config", None), "id2label", None) or {}
        return {int(k): str(v) for k, v in id2label.items()}

    def label_index(self, name: str) -> int:
        """Class index of a label name, case-insensitively or by any of its comma-separated synonyms."""
        return find_label(name, self.labels)


class DeclaredAdapter(ModelAdapter):
    """A classifier whose layout a family declaration gives: its spec is resolved when the adapter is made, so a
    wrong entry is reported before any input is read."""

    def __init__(self, model: nn.Module, processor: Any, declaration: Family):
        self.declaration = declaration
        self.family = declaration.name  # before the processor's check, whose message names the family
        super().__init__(model, processor)
        self.layout = declaration.bind(model)
        self._spec = self.build_spec()

    def build_spec(self) -> ModelSpec:
        return self.layout.spec()
