"""The simulated node: a backend that needs no GPU, with file-driven fault injection."""

from .backend import SimBackend
from .scenario import Scenario, ScenarioError, load_scenario

__all__ = ["Scenario", "ScenarioError", "SimBackend", "load_scenario"]
