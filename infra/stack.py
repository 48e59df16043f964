"""The launcher's command line: `make up`, `make down`, `make status` run it.

    python infra/stack.py install | up [--only infra] | status | restart <names> | down | env

`python infra/stack.py --help` tells more; the launcher itself is the package infra/launcher/.
"""

from __future__ import annotations

if __name__ == "__main__":
    from launcher.cli import main  # run as a script, this file's folder (infra/) is on sys.path

    main()
