"""Black-box teachers: one adapter per file, chosen by a spec string (see base.py)."""

from distilgan.teachers.base import Teacher, load_teacher

__all__ = ["Teacher", "load_teacher"]
