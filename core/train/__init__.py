"""Training stages of the embedded model zoo (Reasoner, VAE, surrogate decoder, Teacher)."""
