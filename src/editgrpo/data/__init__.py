"""Studies: schema, JSONL manifests, dataset adapters, prompts, and the SynthCXR benchmark."""
