"""accelerate launch recipes/train_pathway_vae.py [recipes/configs/pathway_vae/<name>.yaml] [--key value ...]

The recipe itself is astrobio_hf/recipes/train_pathway_vae.py (inside the package, so that the installed
`astrobio-hf train pathway-vae` runs the very same code); this file is the `accelerate launch` entry point.
"""

from astrobio_hf.recipes.train_pathway_vae import main

if __name__ == "__main__":
    main()
