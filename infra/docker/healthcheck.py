"""The image's HEALTHCHECK: GET /health of the service named by SERVICE, on its configured port.

Standard library only; exits 0 when the service answers 200, 1 otherwise.
"""

import os
import sys
import urllib.request

DEFAULT_PORTS = {
    "ingestion": 8001,
    "features": 8002,
    "training": 8003,
    "registry": 8004,
    "serving": 8005,
    "monitoring": 8006,
    "mlflow": 5000,
}


def main() -> int:
    service = os.environ.get("SERVICE", "ingestion")
    port = os.environ.get(f"{service.upper()}_PORT", DEFAULT_PORTS.get(service, 8000))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"{service} on :{port} is not healthy: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
