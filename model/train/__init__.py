"""Training recipe of EVEv2: stage presets, LLaVA and synthetic data, the accelerate loop and its entry point.

python -m model.train --help              # one stage
python -m model.train.pipeline --help     # several stages, each run's output the next one's base
"""
