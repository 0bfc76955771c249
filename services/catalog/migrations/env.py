from services.catalog.models import metadata
from services.kernel.migrate import run_env

run_env(metadata)
