"""Tasks: datasets and other problem definitions that models are trained on."""
