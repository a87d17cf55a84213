"""On-policy distillation, train.objective: onpolicy: the student writes, the teacher scores every
token it wrote, the student learns from its own text. stage.py is the train stage's part,
rounds.py the rounds, parts.py the asking, align.py the cross-tokenizer credit, update.py and
loss.py the learning."""
