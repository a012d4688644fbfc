"""``augmentor export-dataset``: the real crops and the hallucinated copies as ImageFolder, WebDataset, insightface
RecordIO or Hugging Face Parquet (docs/export.md). :func:`augmentor.dataset_export.export.export_dataset` is the
entry point.
"""
