"""Trainer errors, inside the project's one exception tree (``consumer.errors``).

ModelError
├── ExportError          the ONNX export failed or produced a graph with the wrong inputs/outputs
│   ├── ParityError      fp32 ONNX logits differ from PyTorch by more than the tolerance
│   └── QuantizationError the int8 graph agrees with the fp32 graph on too few labels
RegistryError
└── PublishError         the model hub refused a package push or could not be reached (names the
repo) InputError
└── DataError            a training data source is missing, malformed or has no usable rows
"""

from __future__ import annotations

from consumer.errors import InputError, ModelError, RegistryError


class ExportError(ModelError):
    pass


class ParityError(ExportError):
    pass


class QuantizationError(ExportError):
    pass


class PublishError(RegistryError):
    pass


class DataError(InputError):
    pass
