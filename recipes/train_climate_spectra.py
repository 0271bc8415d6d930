"""accelerate launch recipes/train_climate_spectra.py [recipes/configs/climate_spectra/<name>.yaml] [--key value ...]

The recipe itself is astrobio_hf/recipes/train_climate_spectra.py (inside the package); this file is the
`accelerate launch` entry point.
"""

from astrobio_hf.recipes.train_climate_spectra import main

if __name__ == "__main__":
    main()
