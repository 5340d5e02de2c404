"""The package's tokenizer as training reads it: ids for the torch stages and the lexical fit, and
the vocabulary facts they need.

The ids come from the consumer's own ``consumer.inference.TextEncoder`` on a draft of the package
being built (``packaging.draft``, whose ``max_length`` and ``truncation`` say how far to read), so
the encoder trains on exactly the ids it is served: there is no second tokeniser to keep in step
with the consumer's. What is left here is what training needs and serving does not:

- ids as plain lists, the rows of ``step_loop.Encoded`` that torch batches are padded from;
- ``pad_id`` ([PAD], what torch batches are padded with), ``token_id`` for [MASK] (masked LM) and
  [SEP] (the wide-and-deep graph's re-cut), ``special_ids`` (never masked, never counted as
  lexical features) and ``vocab_size`` (the lexical feature space).
"""

from __future__ import annotations

from collections.abc import Sequence

from consumer.inference import TextEncoder, load_tokenizer
from consumer.package import ModelPackage


class TrainingTokens:
    """Texts to id lists as ``package`` (usually a draft) reads them, and its vocabulary's facts."""

    def __init__(self, package: ModelPackage) -> None:
        self.encoder = TextEncoder(package)
        self.max_length = package.max_length
        self.truncation = package.truncation
        # a second copy of the tokenizer, for its vocabulary: TextEncoder keeps its own private
        self.tokenizer = load_tokenizer(package)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.vocab_size = self.tokenizer.get_vocab_size()
        decoder = self.tokenizer.get_added_tokens_decoder()
        # [CLS], [SEP], [PAD], [MASK], [UNK] for BERT
        self.special_ids = {i for i, token in decoder.items() if token.special}

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids the consumer gives each text, ``[CLS] ... [SEP]`` cut to ``max_length`` by the
        package's ``truncation`` policy."""
        return [e.ids.tolist() for e in self.encoder.encode(texts)]

    def token_id(self, token: str) -> int | None:
        """The id of ``token`` (e.g. ``"[MASK]"``), None when the vocabulary lacks it."""
        found = self.tokenizer.token_to_id(token)
        return None if found is None else int(found)
