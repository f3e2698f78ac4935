"""The training engine: the loop, evaluation, optimisers/schedules and checkpoints."""
