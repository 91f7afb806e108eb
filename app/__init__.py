"""Lumi Gateway: GraphQL for AI image and 3D-model generation with live progress."""
