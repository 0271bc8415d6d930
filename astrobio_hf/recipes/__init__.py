"""Training recipes, importable so that `astrobio-hf train <family>` and
`accelerate launch recipes/train_<family>.py` run the same code."""
