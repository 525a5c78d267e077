"""`python -m recipes.default_model ...`: the recipe's entry point (see `recipe.py`)."""

import sys

from .recipe import main

sys.exit(main())
