from flywheel.common.service import serve
from flywheel.registry.app import create_app
from flywheel.registry.settings import RegistrySettings

settings = RegistrySettings()
serve(create_app(settings), settings)
