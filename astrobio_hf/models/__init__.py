"""Model families, one sub-package each (`configuration_<family>.py`, `modeling_<family>.py`).

Nothing is imported here: `astrobio_hf/__init__.py` imports each family explicitly and registers it with the
transformers Auto classes.
"""
