"""accelerate launch recipes/train_diffusion.py [recipes/configs/diffusion/<name>.yaml] [--key value ...]

The recipe itself is astrobio_hf/recipes/train_diffusion.py (inside the package, so that the installed
`astrobio-hf train diffusion` runs the very same code); this file is the `accelerate launch` entry point.
"""

from astrobio_hf.recipes.train_diffusion import main

if __name__ == "__main__":
    main()
