"""An untimed import of ESPnet before a benchmark's timed runs.

The first job to import ESPnet after other work has used the page cache reads torch, ESPnet and
their dependencies from disk; later jobs find them in memory.  Without a warm-up that cost lands
on whichever search a benchmark runs first.  The import runs as the recipe's jobs run it: through
the recipe's ``path.sh``, with ``python3 -O``.
"""

import logging
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional

WARM_COMMAND = '. ./path.sh && python3 -O -c "import espnet2.bin.asr_inference, espnet2.tasks.asr"'


def warm_imports(recipe_dir: Path, env: Optional[Dict[str, str]] = None) -> Optional[float]:
    """Import ESPnet once in ``recipe_dir``'s environment; its wall seconds, or None if it failed
    (a failure is only logged: the timed runs report their own errors)."""
    start = time.time()
    proc = subprocess.run(["bash", "-c", WARM_COMMAND], cwd=recipe_dir, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.time() - start
    if proc.returncode != 0:
        logging.warning(f"warm-up import failed in {recipe_dir} (exit {proc.returncode}): "
                        f"{proc.stderr.strip().splitlines()[-1:] or ''}")
        return None
    logging.info(f"Warm-up (untimed): imported ESPnet in {seconds:.1f} s")
    return seconds
