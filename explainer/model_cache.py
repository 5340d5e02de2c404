"""The exact model version that made a decision: registry lookup by ``name@version``, digest check,
LRU of loaded models.

An allocation names its model as ``name``, ``version`` and ``sha256`` (the package digest). The
explainer only explains with the package the registry holds under that ref *and* whose digest equals
the recorded one:
- ref not registered (e.g. the consumer served it from ``ALLOCATOR_MODEL_DIR``):
  ``ModelNotRegisteredError`` (424);
- registered with another digest: ``ModelDigestMismatchError`` (409);
- the registered package no longer verifies on disk: ``IntegrityError`` from ``Registry.load``
  (424).
Loaded models are kept in a bounded LRU keyed by digest, so a digest is verified once per load, not
per request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from consumer.contracts.messages import ModelRef
from consumer.errors import UnknownModelError
from consumer.inference import OnnxModel, TextEncoder
from consumer.package import ModelPackage
from consumer.registry import ModelEntry
from explainer.attribution import Masking, TokenShap
from explainer.errors import ModelDigestMismatchError, ModelNotRegisteredError
from explainer.tokens import PackageTokens


class RegistryLike(Protocol):
    """What the explainer needs of ``consumer.registry.Registry`` (tests pass a fake)."""

    def get(self, ref: str) -> ModelEntry: ...

    def load(self, ref: str) -> ModelPackage: ...


@dataclass(frozen=True)
class LoadedModel:
    package: ModelPackage
    model: OnnxModel
    shap: TokenShap


def load_model(
    package: ModelPackage, threads: int, sub_batch: int, masking: Masking = "remove"
) -> LoadedModel:
    """An onnxruntime session and a SHAP explainer over a verified package."""
    model = OnnxModel(package, threads, sub_batch)
    tokens = PackageTokens(package, TextEncoder(package))
    return LoadedModel(package, model, TokenShap(model, tokens, masking))


class ModelCache:
    """Resolves a decision's ``ModelRef`` to a loaded, verified model (at most ``size`` kept
    loaded)."""

    def __init__(
        self, registry: RegistryLike, threads: int, sub_batch: int = 8, size: int = 4
    ) -> None:
        self._registry = registry
        self._threads = threads
        self._sub_batch = sub_batch
        self._size = size
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def verify(self, ref: ModelRef) -> ModelEntry:
        """The registry entry of ``ref`` if it is the same artifact; raises as the module docstring
        says if not. Cheap (one Redis read): done on every request, cached results included."""
        try:
            entry = self._registry.get(ref.ref)
        except UnknownModelError as exc:
            raise ModelNotRegisteredError(
                f"model {ref.ref} (sha256 {ref.sha256}) that made this decision is not in the "
                "registry; "
                "register that exact package (allocator models register DIR) to explain its "
                "decisions"
            ) from exc
        if entry.digest != ref.sha256:
            raise ModelDigestMismatchError(
                f"model {ref.ref} is registered with digest {entry.digest}, but the decision was "
                "made by "
                f"digest {ref.sha256}: not the same artifact, refusing to explain with it"
            )
        return entry

    def resolve(self, ref: ModelRef) -> LoadedModel:
        """The loaded model for ``ref`` after ``verify``; the package files are verified when it is
        loaded."""
        self.verify(ref)
        with self._lock:
            hit = self._models.get(ref.sha256)
            if hit is not None:
                self._models.move_to_end(ref.sha256)
                return hit
            gate = self._loading.setdefault(ref.sha256, threading.Lock())
        with gate:  # one load per digest even when requests for it arrive together
            with self._lock:
                hit = self._models.get(ref.sha256)
            if hit is not None:
                return hit
            # Registry.load verifies every file against the digest recorded at registration
            package = self._registry.load(ref.ref)
            if package.digest != ref.sha256:  # the registry changed between get and load
                raise ModelDigestMismatchError(
                    f"model {ref.ref}: loaded digest {package.digest} != {ref.sha256}"
                )
            loaded = load_model(package, self._threads, self._sub_batch)
            with self._lock:
                self._models[ref.sha256] = loaded
                while len(self._models) > self._size:
                    self._models.popitem(last=False)
                self._loading.pop(ref.sha256, None)
            return loaded

    def loaded(self) -> list[str]:
        """Refs of the loaded models, least recently used first."""
        with self._lock:
            return [m.package.ref for m in self._models.values()]
