"""The train stage's loss library: what every objective minimizes, and nothing that knows an
objective (no module here imports one). divergence.py is the one divergence between a teacher's
and a student's distributions (forward KL, reverse KL, JSD; temperature; a top-k support with
its tail, or the full vocabulary); features.py the hidden-state, attention and relation terms;
policy.py the importance-sampled loss of on-policy rounds; trainers.py the SFTTrainer
subclasses whose compute_loss applies them."""
