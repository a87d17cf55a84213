"""Helpers the stages share. Not a stage: the runner loads only the names in its STAGES."""
