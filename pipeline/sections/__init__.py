"""The study's sections (pipeline/study_sections.py): importing this package registers every one."""
from pipeline.sections import (certified, corruptions, defence_heads, misalignment, missing_input,  # noqa: F401
                               time_attacks, training_defences, transfer, universal)
