#!/bin/sh
# Create bench/.venv-peers with the peer engines (never installed into the system Python).
# It is git-ignored by the '*' .gitignore written inside it.
set -e
cd "$(dirname "$0")/.."
python3 -m venv .venv-peers
echo '*' > .venv-peers/.gitignore
.venv-peers/bin/pip install --upgrade pip
.venv-peers/bin/pip install -r requirements-peers.txt
