"""Feast feature repo and the feature function shared by training, serving and drift monitoring."""
