#!/usr/bin/env bash
# The ordinary user the rootless tests run nearmetal as (tests/integration/test_rootless.py, the rootless layer's
# exit-path tests): created idempotently with a home and subordinate uid/gid ranges (what newuidmap/newgidmap
# map into its user namespaces), and let through the directories above this checkout and its Python
# (search permission only, by ACL) so it can start the same nearmetal the tests run.
#   bash scripts/test-user.sh [NAME]    (default: nearmetal-test)
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-nearmetal-test}
if ! id -u "$name" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash --comment "nearmetal rootless tests" "$name"
fi
touch /etc/subuid /etc/subgid
for file in /etc/subuid /etc/subgid; do
  if ! grep -q "^$name:" "$file"; then
    # a range of 65536 ids above every range already given out
    start=$(awk -F: 'BEGIN{m=100000} {e=$2+$3; if (e>m) m=e} END{print m}' "$file")
    echo "$name:$start:65536" >>"$file"
  fi
done
python=.venv/bin/python
[[ -x "$python" ]] || python=$(command -v python3)
for path in "$(readlink -f "$python")" "$PWD/src/nearmetal/__init__.py"; do
  dir=$(dirname "$path")
  while [[ "$dir" != / ]]; do
    if ! runuser -u "$name" -- test -x "$dir" 2>/dev/null; then
      setfacl -m "u:$name:x" "$dir"
    fi
    dir=$(dirname "$dir")
  done
done
echo "$name uid=$(id -u "$name") subuid=$(grep "^$name:" /etc/subuid | cut -d: -f2-)"
