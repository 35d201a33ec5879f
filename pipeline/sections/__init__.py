"""The study's sections (pipeline/study_sections.py): importing this package registers every one."""
from pipeline.sections import (certified, corruptions, defence_heads, defences, misalignment,  # noqa: F401
                               missing_input, time_attacks, training_defences, transfer, universal)
