"""WISH: tags, points and boxes with the min-over-three SAM mask cost; bundle ``wish_dsb2018``."""

from scribmed.recipes.wish.recipe import WISHConfig, WISHRecipe, choose_candidates, parse_mix

__all__ = ["WISHConfig", "WISHRecipe", "choose_candidates", "parse_mix"]
