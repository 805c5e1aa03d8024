"""The training loop and the model zoo."""
