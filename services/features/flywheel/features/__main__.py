from flywheel.common.service import serve
from flywheel.features.app import create_app
from flywheel.features.settings import FeaturesSettings

settings = FeaturesSettings()
serve(create_app(settings), settings)
