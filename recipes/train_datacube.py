"""accelerate launch recipes/train_datacube.py [recipes/configs/datacube/<name>.yaml] [--key value ...]

The recipe itself is astrobio_hf/recipes/train_datacube.py (inside the package, so that the installed
`astrobio-hf train datacube` runs the very same code); this file is the `accelerate launch` entry point.
"""

from astrobio_hf.recipes.train_datacube import main

if __name__ == "__main__":
    main()
