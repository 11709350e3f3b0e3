"""Namespace for OpenMMLab-style projects; ``projects.dmcp`` lives here."""
