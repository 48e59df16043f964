from flywheel.common.service import serve
from flywheel.monitoring.app import create_app
from flywheel.monitoring.settings import MonitoringSettings

settings = MonitoringSettings()
serve(create_app(settings), settings)
