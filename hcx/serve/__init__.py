"""Inference engine with continuous batching (SPEC §5.3); see docs/engine.md."""
