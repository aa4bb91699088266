"""Recipe stage: YAML in, a checked and resolved mergekit configuration out."""

from harness.recipe.schema import AlignSpec, Recipe
from harness.recipe.validate import (
    PARAMETER_RANGES,
    ResolvedRecipe,
    load_recipe,
    recipe_from_dict,
    resolve_recipe,
)

__all__ = [
    "AlignSpec",
    "PARAMETER_RANGES",
    "Recipe",
    "ResolvedRecipe",
    "load_recipe",
    "recipe_from_dict",
    "resolve_recipe",
]
