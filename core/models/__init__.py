"""Model families (Reasoner, Teacher, surrogate decoder) and their shared building blocks."""
