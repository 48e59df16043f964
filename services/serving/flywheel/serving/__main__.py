from flywheel.common.service import serve
from flywheel.serving.app import create_app
from flywheel.serving.settings import ServingSettings

settings = ServingSettings()
serve(create_app(settings), settings)
