"""Edits of real images through a teacher: inversion (the slow path that image-to-image students replace)."""
