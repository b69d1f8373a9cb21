"""The app's screens, one module each; every screen reaches the runtime through `app.workbench`."""

from .ask import AskScreen
from .eval import EvalScreen
from .history import HistoryScreen, SessionScreen
from .models import ModelsScreen
from .simulator import SimulatorScreen
from .training import TrainingScreen

__all__ = ["AskScreen", "EvalScreen", "HistoryScreen", "ModelsScreen", "SessionScreen", "SimulatorScreen", "TrainingScreen"]
