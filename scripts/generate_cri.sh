#!/usr/bin/env bash
# Regenerate the node agent's CRI message classes from its own proto (runtime_v1.proto).
# Needs grpcio-tools (a dev dependency): uv run bash scripts/generate_cri.sh
set -euo pipefail
cd "$(dirname "$0")/../services/response/src"
python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. qcdr_response/actions/node/_cri/runtime_v1.proto
