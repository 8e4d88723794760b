#!/usr/bin/env bash
# Install test dependencies, start the services the tests use, run the whole test suite.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test --with-torch
# the single-node Kubernetes of scripts/services/kubernetes.sh, from Debian's sources: ~11 minutes on 2 cores
# the first time (measured), cached in /var/cache/nearmetal/kubernetes after that (a second call is instant)
bash scripts/build-kubernetes.sh || echo "warning: the Kubernetes build failed; its tests will be skipped" >&2
# the ordinary user the rootless tests run nearmetal as (subordinate id ranges, access to this checkout)
if [[ "$(id -u)" == 0 ]]; then
  bash scripts/test-user.sh
fi

# services the tests talk to (each script prints the env vars to export, and stops on exit)
services=()
cleanup_services() {
  for ((i=${#services[@]}-1; i>=0; i--)); do bash "${services[i]}" stop || true; done
}
trap cleanup_services EXIT
for service in scripts/services/*.sh; do
  [[ -e "$service" ]] || continue
  # the Kubernetes node is started and stopped by its own tests' fixture: while it runs it moves a cgroup
  # controller, sets kernel.panic_on_oops and uses CPU, which the rest of the suite must not see
  [[ "$(basename "$service")" == kubernetes.sh ]] && continue
  echo "== starting $(basename "$service" .sh)"
  if exports=$(bash "$service" start); then
    services+=("$service")
    eval "$exports"
  else
    echo "warning: $(basename "$service") did not start; tests that need it will be skipped" >&2
  fi
done

echo "== ruff"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -ra "$@"
