"""Classification dataset formats, one module each, and the registry that lists them.

Each format module reads its files (or generates its samples) and declares the
:class:`~onnx_run.tasks.formats.reader.DatasetReader` records for the dataset names it
serves; :mod:`onnx_run.tasks.formats.registry` registers them. Splitting and
preprocessing are not done here but once, for every format alike, by
:func:`onnx_run.tasks.datasets.load_classification_dataset`.
"""
