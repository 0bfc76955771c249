from services.kernel.migrate import run_env
from services.resale.models import metadata

run_env(metadata)
