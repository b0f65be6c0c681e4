"""Built-in distillation losses: none, kd (Hinton) and ntkd (NTK matching)."""
