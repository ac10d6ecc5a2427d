"""Model parts: vision towers, projectors, LLM backbones, MoE layers, the EdgeVLM glue and presets."""
