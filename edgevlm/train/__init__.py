"""Training: stages (vision warm-up, projector pre-training, instruction tuning), LoRA, checkpoints, resume."""
