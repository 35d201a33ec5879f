"""Datasets: specs (registry of paper datasets + the embedded synthetic one) and the audio-visual loader."""
from dataset.specs import DatasetSpec, get_spec, list_datasets  # noqa: F401
