"""The study's sections (pipeline/study_sections.py): importing this package registers every one."""

from pipeline.sections import missing_input, time_attacks  # noqa: F401,E402  (each module registers its section)
