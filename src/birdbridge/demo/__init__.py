"""The offline demo: a synthetic world, stand-in teacher and student, and the paper's loop."""
