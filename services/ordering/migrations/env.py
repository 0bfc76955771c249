from services.kernel.migrate import run_env
from services.ordering.models import metadata

run_env(metadata)
