from flywheel.common.service import serve
from flywheel.training.app import create_app
from flywheel.training.settings import TrainingSettings

settings = TrainingSettings()
serve(create_app(settings), settings)
