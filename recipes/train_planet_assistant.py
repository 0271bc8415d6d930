"""accelerate launch recipes/train_planet_assistant.py --projector RUN_DIR [config.yaml] [--key value ...]

The recipe itself is astrobio_hf/recipes/train_planet_assistant.py (inside the package, so that the installed
`astrobio-hf train` runs the very same code); this file is the `accelerate launch` entry point.
A bad input ends the run with one line (`astrobio-hf: error: ...`, exit status 2; ASTROBIO_HF_TRACEBACK=1 for
the traceback).
"""

from astrobio_hf.recipes.train_planet_assistant import main
from astrobio_hf.training.errors import run_main

if __name__ == "__main__":
    run_main(main)
