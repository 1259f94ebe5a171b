"""Built-in synthetic prospect history: a realistic B2B funnel with known ground truth.

``generate(n_leads, seed, out_dir)`` writes a complete data directory (the three contract tables,
``contract.yaml``) plus ``ground_truth/`` with each lead's hidden traits and outcome, the simulator's
own weekly conversion propensity and the campaigns' true effects. See
:mod:`features.simulator.process` for the generating process.
"""

from features.simulator.config import SimulatorConfig
from features.simulator.generate import GROUND_TRUTH_DIR, GenerationSummary, generate, simulated_contract

__all__ = ["GROUND_TRUTH_DIR", "GenerationSummary", "SimulatorConfig", "generate", "simulated_contract"]
