"""Test suite of the DMCP plugin (a package, so that ``tests.helpers`` wins
over the top-level ``tests`` package that mmrazor 1.0.0 installs in
site-packages)."""
