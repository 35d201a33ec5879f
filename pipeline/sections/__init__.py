"""The study's sections (pipeline/study_sections.py): importing this package registers every one."""
from pipeline.sections import (corruptions, misalignment, missing_input, time_attacks,  # noqa: F401
                               training_defences, transfer, universal)
