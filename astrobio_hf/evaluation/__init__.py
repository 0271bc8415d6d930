"""Held-out evaluation of each model family: its metrics, the baselines fitted in the same run, plots and the
model card sections (`astrobio_hf.evaluation.<family>`, one module per family).

The recipes import their family's module, never the reverse. Nothing is imported here: import a family's module
by path.
"""
