"""accelerate launch recipes/train_cnn_vit.py [recipes/configs/cnn_vit/<name>.yaml] [--key value ...]

The recipe itself is astrobio_hf/recipes/train_cnn_vit.py (inside the package, so that the installed CLI runs the
very same code); this file is the `accelerate launch` entry point.
"""

from astrobio_hf.recipes.train_cnn_vit import main

if __name__ == "__main__":
    main()
