"""The study's sections (pipeline/study_sections.py): importing this package registers every one."""
