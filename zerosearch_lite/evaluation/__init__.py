"""Evaluation: QA datasets, the papers' metrics (strict EM, cover-EM, F1, pass@k, majority@k, bootstrap
intervals), `zsl eval` runs over the rollout code GRPO uses, reports and comparisons.

Sits between the agent (whose rollouts it scores) and training (whose held-out score it provides); must not
import torch at module import time.
"""
