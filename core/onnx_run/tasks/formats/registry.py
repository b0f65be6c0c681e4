"""The reader registry: every dataset name ``load_classification_dataset`` accepts.

Each format module declares its :class:`DatasetReader` records in ``READERS``; the
built-in ones are registered here in the order of :data:`BUILTIN_FORMATS` (which is the
order of ``CLASSIFICATION_DATASETS`` and of the names in error messages), so that order
never depends on which module happens to be imported first. A format defined elsewhere
(e.g. in a plugin) calls :func:`register_reader` with its reader.
"""

from __future__ import annotations

from onnx_run.errors import UserError
from onnx_run.tasks.formats import cifar10, digits, folder, idx, shapes_rgb
from onnx_run.tasks.formats.reader import DatasetReader

__all__ = ["BUILTIN_FORMATS", "DESCRIPTIONS", "READERS", "find_reader", "normalize_name", "register_reader"]

#: The built-in format modules, in registration order.
BUILTIN_FORMATS = (digits, shapes_rgb, idx, cifar10, folder)

#: dataset name -> reader, in registration order.
READERS: dict[str, DatasetReader] = {}

#: dataset name -> one-line description, kept in step with READERS (``CLASSIFICATION_DATASETS``).
DESCRIPTIONS: dict[str, str] = {}


def normalize_name(name) -> str:
    """The registry key for a user's dataset name: ``MNIST``, ``fashion_mnist`` work too."""
    return str(name).strip().lower().replace("_", "-")


def register_reader(reader: DatasetReader) -> DatasetReader:
    """Add ``reader`` under its name; a second reader for a taken name is a ValueError."""
    if not isinstance(reader, DatasetReader):
        raise TypeError(f"register_reader expects a DatasetReader, got {type(reader).__name__}")
    if READERS.get(reader.name, reader) is not reader:
        raise ValueError(f"a reader for dataset {reader.name!r} is already registered")
    READERS[reader.name] = reader
    DESCRIPTIONS[reader.name] = reader.description
    return reader


def find_reader(name) -> DatasetReader:
    """The reader registered for ``name`` (normalised), or a UserError listing the names."""
    reader = READERS.get(normalize_name(name))
    if reader is None:
        raise UserError(f"dataset {name!r} is unknown; allowed: {', '.join(READERS)}")
    return reader


for _module in BUILTIN_FORMATS:
    for _reader in _module.READERS:
        register_reader(_reader)
del _module, _reader
