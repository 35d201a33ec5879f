"""The study's sections (pipeline/study_sections.py): importing this package registers every one."""
from pipeline.sections import corruptions, missing_input, time_attacks, training_defences  # noqa: F401
from pipeline.sections import certified, defence_heads  # noqa: F401
