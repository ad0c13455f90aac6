"""Scores: a model's class rasters against masks (``evaluate``) and the metrics training shares.
"""
