"""Source-only baseline (the papers' common DeepLabV2 baseline): the loop's own source CE (plus the active-label
CE on the target when labels exist) and nothing else -- no hooks."""
from core.methods.base import Method


class SourceOnly(Method):
    name = "source_only"
    summary = "no adaptation: source CE (+ CE on active target labels)"
    uses_target_output = False
