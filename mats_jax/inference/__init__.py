"""Listening with a trained MATS: audio in, text out (the API behind generate and evaluate)."""
