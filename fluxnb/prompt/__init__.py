"""Prompts: exact CLIP/T5 token counts and the 77-token CLIP trim (`tokens`), and the
enhancers with their provenance and cache (`enhancer`, `claude`, `local_enhancer`).
"""
