"""Explaining scores: reasons (TreeSHAP drivers), needs, next-best action (and effect estimates)."""
