"""Pretraining data: tokenizer, sources, SOP/NSP examples, input pipeline."""
