#!/usr/bin/env bash
# Regenerate ingest's Hubble message classes from its own protos (flow.proto, observer.proto).
# Needs grpcio-tools (a dev dependency): uv run bash scripts/generate_hubble.sh
set -euo pipefail
cd "$(dirname "$0")/../services/ingest/src"
python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. \
    qcdr_ingest/hubble/_proto/flow.proto qcdr_ingest/hubble/_proto/observer.proto
