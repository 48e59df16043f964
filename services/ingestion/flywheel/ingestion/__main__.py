from flywheel.common.service import serve
from flywheel.ingestion.app import create_app
from flywheel.ingestion.settings import IngestionSettings

settings = IngestionSettings()
serve(create_app(settings), settings)
